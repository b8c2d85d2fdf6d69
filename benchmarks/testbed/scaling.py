#!/usr/bin/env python
"""How unlearning compares with retraining as the forget set grows, on sequential.py's build: nested forget sets
(request 1's first half, request 1, requests 1-2, every request: ~1%, 2%, 4% and 8% of the training tokens), one
batched run each from the original model, each scored against the model retrained without it.

    python benchmarks/testbed/scaling.py        # full testbed variant (builds what is not cached)
    python benchmarks/testbed/scaling.py --tiny --cache-dir /tmp/c --out-dir /tmp/x   # smoke run

`sequential.py --with-scaling` writes the same report from one run of both (request 1 alone is then the
sequential chain's first run). Settings, measures and the build: sequential.py.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sequential  # noqa: E402


def main(argv=None) -> dict:
    return sequential.main(argv, mode="scaling")


if __name__ == "__main__":
    main()
