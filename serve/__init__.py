"""ltxtrain's HTTP service on Ray Serve (see serve/README.md). The library never imports this package."""

import os
import sys

# A checkout run without `pip install -e .` (a Serve replica in the shipped working dir): use its library copy.
try:
    import ltxtrain  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "platform"))
