#!/usr/bin/env python
"""Build the exact-retrain testbed: pre-train the original model (with the forget set) and the retrained model
(the same recipe without it) from scratch, and cache both under $HF_UNLEARN_CACHE/testbed/<version> (default
~/.cache/hf_unlearn/testbed/<version>); a re-run with the same configuration loads them.

    python benchmarks/testbed/build.py            # full testbed (reads ../shared/data/books), ~2.5M tokens per model
    python benchmarks/testbed/build.py --tiny     # seconds; stdlib code only

The recipe, the splits and the meaning of "same recipe" are documented in common.py. With --jobs 2 (default) the
two models train in parallel, one torch thread each (on a 2-core machine this is the fastest arrangement, and a
one-thread process's CPU time is what the run costs on an idle core).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.common_arguments(parser)
    args = parser.parse_args(argv)
    common.quiet()
    common.set_threads(common.threads_for(args))
    config = common.get_config(args.tiny)
    testbed = common.build(
        config, data_dir=args.data_dir, cache_dir=args.cache_dir, jobs=args.jobs, threads=common.threads_for(args)
    )
    runs = testbed.meta["runs"]
    summary = {
        k: {f: runs[k][f] for f in ("tokens", "optimizer_steps", "params", "flops", "wall_s", "cpu_s")} for k in runs
    }
    print(json.dumps({"root": testbed.root, "splits": testbed.meta["splits"], "runs": summary}, indent=1))
    return testbed.meta


if __name__ == "__main__":
    main()
