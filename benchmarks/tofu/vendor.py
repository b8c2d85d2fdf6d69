#!/usr/bin/env python
"""Write the vendored TOFU subset (benchmarks/tofu/data/) from a folder of TOFU's JSON Lines files.

    python benchmarks/tofu/vendor.py /path/to/tofu_jsonl [--out benchmarks/tofu/data]

TOFU (locuslab/TOFU, MIT licence) has 200 fictitious authors with 20 question/answer pairs each, in file order
(author i = records 20i .. 20i+19 of `full`; every forget split is the tail of `full`). The `tiny` and `cpu` sizes of
run.py use only:

- `full`: the records of the retain-pool authors VENDORED_RETAIN_AUTHORS, of forget01's two authors (198, 199) and
  of the first half of forget05's authors (FORGET05_KEPT_AUTHORS, 190-194: the cpu size's forget set);
- `forget01_perturbed`: whole (those two authors); `forget05_perturbed`: the records of FORGET05_KEPT_AUTHORS;
- `retain_perturbed`: the first RETAIN_EVAL_PER_AUTHOR records of each retain-pool author (file order);
- `holdout01`, `holdout05`, `real_authors_perturbed`, `world_facts_perturbed`: whole (small).

The `gpu` size needs all of TOFU: it reads the Hub (`locuslab/TOFU`) or `--data-dir` with the full files.
"""

from __future__ import annotations

import argparse
import json
import os

VENDORED_RETAIN_AUTHORS = tuple(range(12))
FORGET01_AUTHORS = (198, 199)
FORGET05_KEPT_AUTHORS = tuple(range(190, 195))
RETAIN_EVAL_PER_AUTHOR = 3
RECORDS_PER_AUTHOR = 20


def read(folder: str, name: str) -> list[dict]:
    with open(os.path.join(folder, f"{name}.jsonl")) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write(folder: str, name: str, records: list[dict]) -> None:
    with open(os.path.join(folder, f"{name}.jsonl"), "w") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="folder with TOFU's <config>.jsonl files (full, forget01_perturbed, ...)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    full = read(args.source, "full")
    author = {record["question"]: index // RECORDS_PER_AUTHOR for index, record in enumerate(full)}
    keep = set(VENDORED_RETAIN_AUTHORS) | set(FORGET01_AUTHORS) | set(FORGET05_KEPT_AUTHORS)
    write(args.out, "full", [r for i, r in enumerate(full) if i // RECORDS_PER_AUTHOR in keep])
    write(args.out, "forget01_perturbed", read(args.source, "forget01_perturbed"))
    forget05 = [
        r for r in read(args.source, "forget05_perturbed") if author.get(r["question"]) in FORGET05_KEPT_AUTHORS
    ]
    write(args.out, "forget05_perturbed", forget05)
    seen: dict[int, int] = {}
    retain_eval = []
    for record in read(args.source, "retain_perturbed"):
        who = author.get(record["question"])
        if who in VENDORED_RETAIN_AUTHORS and seen.get(who, 0) < RETAIN_EVAL_PER_AUTHOR:
            seen[who] = seen.get(who, 0) + 1
            retain_eval.append(record)
    write(args.out, "retain_perturbed", retain_eval)
    for name in ("holdout01", "holdout05", "real_authors_perturbed", "world_facts_perturbed"):
        write(args.out, name, read(args.source, name))
    # Which TOFU author each block of 20 records of the vendored `full` is (run.py's TofuData reads it).
    with open(os.path.join(args.out, "subset.json"), "w") as handle:
        json.dump(
            {
                "authors": sorted(keep),
                "records_per_author": RECORDS_PER_AUTHOR,
                "retain_perturbed_per_author": RETAIN_EVAL_PER_AUTHOR,
            },
            handle,
        )
        handle.write("\n")


if __name__ == "__main__":
    main()
