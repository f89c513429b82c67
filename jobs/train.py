"""Ray job entrypoint: `ray job submit --working-dir . -- python jobs/train.py ENDPOINT REQUEST.json --out DIR ...`.

Inside a Ray job RAY_ADDRESS is set, so `ray.init()` joins the cluster the job was submitted to.
"""

import os
import sys

# The working directory is shipped as is: make the library importable without installing it.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "platform"))

os.environ.setdefault("LTXTRAIN_SHIP_PACKAGE", "1")

from ltxtrain.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
