"""Ray job entrypoint used by the service: `python serve/train_job.py ENDPOINT REQUEST.json --out DIR ... [--strict-urls]`.

The same as `jobs/train.py` (it parses the library CLI's own `train` flags), plus `--strict-urls`: dataset URLs
resolving to loopback/private/link-local addresses, local paths and file:// URLs are refused
(`IntakeLimits(allow_private_addresses=False)`). Once `ltxtrain train` grows that flag itself, the service can
submit `jobs/train.py` directly.
"""

import json
import logging
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "platform"))
os.environ.setdefault("LTXTRAIN_SHIP_PACKAGE", "1")

from ltxtrain.api.errors import RequestError  # noqa: E402
from ltxtrain.cli import build_parser  # noqa: E402
from ltxtrain.intake.limits import IntakeLimits  # noqa: E402
from ltxtrain.jobs import JobOptions, run_job  # noqa: E402


def main(argv: list[str]) -> int:
    strict = "--strict-urls" in argv
    argv = [a for a in argv if a != "--strict-urls"]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    args = build_parser().parse_args(["train", *argv])
    opts = JobOptions(model=args.model, text_encoder=args.text_encoder, address=args.address,
                      num_workers=args.workers, seed=args.seed, keep_work=args.keep_work,
                      limits=IntakeLimits(allow_private_addresses=not strict))
    if args.cpu:
        opts.use_gpu = False
    logging.getLogger("ltxtrain").info("phase: intake (strict URLs: %s)", strict)
    try:
        with open(args.request) as fh:  # written by the service, already validated
            payload = json.load(fh)
        result = run_job(args.endpoint, payload, args.out, opts)
    except RequestError as exc:
        print(json.dumps(exc.to_json(), indent=2), flush=True)
        return 2
    print(result.model_dump_json(indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
