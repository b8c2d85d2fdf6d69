#!/usr/bin/env python
"""Hyperparameter robustness on the exact-retrain testbed: a learning-rate x epochs grid for gradient ascent (GA)
and for GA + descent on in-distribution data (the paper's headline: GA alone is brittle, GA + in-distribution
descent is robust).

    python benchmarks/testbed/grid.py              # full testbed, 4 learning rates x 4 budgets x 2 methods
    python benchmarks/testbed/grid.py --tiny --out-dir /tmp/x --cache-dir /tmp/c    # smoke run (2 x 2)

Every cell is one unlearning run from the original model with a fixed budget (no stopping rule: the grid asks
what a given learning rate and number of epochs do), the library's defaults otherwise (AdamW, cosine schedule
over the run, no weight decay) but no warmup (3% of a few dozen steps is one step at lr 0), batch 8 forget
chunks (+ 8 paired in-distribution retain chunks, weight 1:1, for ga_descent).

Acceptance band (the same as run_methods.py's quality bar): MIA AUC (LOSS attack, forget vs approximate) within
0.05 of the retrained model's AND retain NLL within 5% of the retrained model's. Reported: the share of each
method's grid inside the band, a Markdown table, and one PNG heatmap per method.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

from benchmarks import harness  # noqa: E402  (common put the repository root on sys.path)

GRID_METHODS = ("ga", "ga_descent")
LEARNING_RATES = (1e-4, 3e-4, 1e-3, 3e-3)
EPOCHS = (1, 2, 4, 8)
BAND = {"auc_tol": 0.05, "retain_tol": 0.05}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.common_arguments(parser)
    parser.add_argument("--methods", nargs="+", default=list(GRID_METHODS), choices=common.document_methods())
    parser.add_argument("--learning-rates", nargs="+", type=float, default=list(LEARNING_RATES))
    parser.add_argument("--epochs", nargs="+", type=float, default=list(EPOCHS))
    parser.add_argument("--batch-size", type=int, default=common.UnlearnSettings().batch_size)
    parser.add_argument(
        "--replot", action="store_true", help="only redraw grid.md and the PNGs from <out-dir>/grid.json"
    )
    args = parser.parse_args(argv)
    if args.replot:
        with open(os.path.join(args.out_dir, "grid.json")) as handle:
            return write_outputs(json.load(handle), args.out_dir)
    common.quiet()
    if args.tiny:
        args.learning_rates, args.epochs, args.batch_size = args.learning_rates[-2:], [1, 2], 4
    config = common.get_config(args.tiny)
    machine_start, threads, testbed, ctx = common.prepare(args, config)
    tasks = [
        {
            "config": config,
            "cache_dir": args.cache_dir,
            "data_dir": args.data_dir,
            "threads": threads,
            "method": method,
            "learning_rate": lr,
            "epochs": epochs,
            "batch_size": args.batch_size,
            "retain_weight": 1.0,
            "stop": False,
            "eval_splits": ("forget", "approximate", "retain"),
            "key": [method, lr, epochs],
        }
        for method in args.methods
        for lr in args.learning_rates
        for epochs in args.epochs
    ]
    # Longest runs first, so that the two workers finish together.
    order = sorted(range(len(tasks)), key=lambda i: -tasks[i]["epochs"] * (2 if tasks[i]["method"] != "ga" else 1))
    results = common.run_tasks([tasks[i] for i in order], args.jobs)
    results = [r for _, r in sorted(zip(order, results))]
    retrained = ctx["retrained_eval"]
    cells = []
    for r in results:
        band = common.acceptance(r, retrained, BAND["auc_tol"], BAND["retain_tol"])
        cells.append(
            {
                "method": r["method"],
                "learning_rate": r["learning_rate"],
                "epochs": r["max_epochs"],
                "optimizer_steps": r["optimizer_steps"],
                "nll": r["nll"],
                "mia_auc": r["mia_auc"],
                "kl_to_retrained": r["kl_to_retrained"],
                "abs_dnll_to_retrained": r["abs_dnll_to_retrained"],
                "train_tokens": r["train_tokens"],
                "flops": r["flops"],
                "cpu_s": r["cpu_s"],
                "wall_s": r["wall_s"],
                **band,
            }
        )

    def share_of(method, key):
        mine = [c for c in cells if c["method"] == method]
        return sum(c[key] for c in mine) / max(1, len(mine))

    share = {m: share_of(m, "in_band") for m in args.methods}
    partial = {m: {"auc_ok": share_of(m, "auc_ok"), "retain_ok": share_of(m, "retain_ok")} for m in args.methods}
    import statistics

    median_retain = {
        m: statistics.median(c["nll"]["retain"] / retrained["nll"]["retain"] - 1 for c in cells if c["method"] == m)
        for m in args.methods
    }
    report = {
        "benchmark": "exact-retrain testbed: learning-rate x epochs robustness grid",
        "date": common.now(),
        "command": common.command_line(),
        "machine": machine_start,
        "machine_end": common.machine_info(),
        "testbed_version": testbed.meta["version"],
        "settings": {
            "learning_rates": args.learning_rates,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "methods": args.methods,
            "jobs": args.jobs,
            "tiny": args.tiny,
            "forget_chunks": testbed.meta["splits"]["forget"],
        },
        "band": BAND,
        "retrained": retrained,
        "original": ctx["original_eval"],
        "share_in_band": share,
        "share_meeting_each_condition": partial,
        "median_retain_nll_change": median_retain,
        "cells": cells,
    }
    harness.write_json(os.path.join(args.out_dir, "grid.json"), report)
    return write_outputs(report, args.out_dir)


def write_outputs(report: dict, out_dir: str) -> dict:
    """grid.md and one PNG per method, from the report (grid.json)."""
    pngs = [heatmap(report, m, os.path.join(out_dir, f"grid_{m}.png")) for m in report["settings"]["methods"]]
    harness.write_text(os.path.join(out_dir, "grid.md"), markdown(report, [os.path.basename(p) for p in pngs]))
    print(markdown(report, pngs))
    return report


def _matrix(report: dict, method: str, value) -> list[list]:
    lrs, epochs = report["settings"]["learning_rates"], report["settings"]["epochs"]
    by_key = {(c["learning_rate"], c["epochs"]): c for c in report["cells"] if c["method"] == method}
    return [[value(by_key[(lr, e)]) for e in epochs] for lr in lrs]


def heatmap(report: dict, method: str, path: str) -> str:
    """Two panels: MIA AUC minus the retrained model's, and the retain NLL's relative change against the
    retrained model's; cells inside the acceptance band are outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.patches import Rectangle

    lrs, epochs = report["settings"]["learning_rates"], report["settings"]["epochs"]
    retr = report["retrained"]
    auc = np.array(_matrix(report, method, lambda c: c["mia_auc"] - retr["mia_auc"]))
    ret = np.array(_matrix(report, method, lambda c: c["nll"]["retain"] / retr["nll"]["retain"] - 1))
    band = np.array(_matrix(report, method, lambda c: c["in_band"]))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    # Colours saturate at the ends of each scale (the numbers in the cells are exact).
    panels = [
        (auc, "MIA AUC - retrained AUC", TwoSlopeNorm(vcenter=0.0, vmin=-0.5, vmax=0.5), "{:+.2f}"),
        (
            ret,
            "retain NLL / retrained - 1 (colour saturates at +50%)",
            TwoSlopeNorm(vcenter=0.0, vmin=-0.1, vmax=0.5),
            "{:+.1%}",
        ),
    ]
    for ax, (values, title, norm, text) in zip(axes, panels):
        clipped = np.clip(values, norm.vmin, norm.vmax)
        image = ax.imshow(clipped, cmap="coolwarm", norm=norm, origin="lower", aspect="auto")
        ax.set_xticks(range(len(epochs)), [f"{e:g}" for e in epochs])
        ax.set_yticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
        ax.set_xlabel("epochs over the forget set")
        ax.set_ylabel("learning rate")
        ax.set_title(title, fontsize=10)
        for i in range(len(lrs)):
            for j in range(len(epochs)):
                ax.text(j, i, text.format(values[i, j]), ha="center", va="center", fontsize=8)
                if band[i, j]:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2.5))
        fig.colorbar(image, ax=ax, fraction=0.046)
    share = report["share_in_band"][method]
    fig.suptitle(
        f"{method}: {share:.0%} of the grid inside the band (outlined: |dAUC| <= {report['band']['auc_tol']} "
        f"and retain NLL within {report['band']['retain_tol']:.0%} of the retrained model)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def markdown(report: dict, pngs: list[str]) -> str:
    s, retr, orig = report["settings"], report["retrained"], report["original"]
    lines = [
        "# Exact-retrain testbed: learning-rate x epochs robustness grid",
        "",
        f"Date {report['date']}; command `{report['command']}`; machine: {report['machine']['cpu_model']}, "
        f"{report['machine']['cpu_count']} cores, torch {report['machine']['torch']}; testbed "
        f"`{report['testbed_version']}` (see methods.md).",
        "",
        f"Each cell: one run from the original model, fixed budget (no stopping rule), batch {s['batch_size']} of the "
        f"{s['forget_chunks']} forget chunks (ga_descent: + as many in-distribution retain chunks, weight 1:1), "
        "cosine schedule, no warmup. Band: |MIA AUC - retrained AUC| <= "
        f"{report['band']['auc_tol']} and |retain NLL / retrained retain NLL - 1| <= {report['band']['retain_tol']:.0%}.",
        "",
        f"Retrained model: MIA AUC {retr['mia_auc']:.3f}, forget NLL {retr['nll']['forget']:.3f}, retain NLL "
        f"{retr['nll']['retain']:.3f}. Original: MIA AUC {orig['mia_auc']:.3f}, forget NLL {orig['nll']['forget']:.3f}, "
        f"retain NLL {orig['nll']['retain']:.3f}.",
        "",
        "Share of the grid inside the band: "
        + ", ".join(
            f"**{m}: {v:.0%}** ({round(v * len(s['learning_rates']) * len(s['epochs']))}/"
            f"{len(s['learning_rates']) * len(s['epochs'])})"
            for m, v in report["share_in_band"].items()
        ),
        "",
        "Each condition alone: "
        + "; ".join(
            f"{m}: AUC within {report['band']['auc_tol']} in {v['auc_ok']:.0%}, retain NLL within "
            f"{report['band']['retain_tol']:.0%} in {v['retain_ok']:.0%}"
            for m, v in report["share_meeting_each_condition"].items()
        )
        + ".",
        "",
        "Median retain NLL change against the retrained model over the grid: "
        + ", ".join(f"{m} {v:+.1%}" for m, v in report["median_retain_nll_change"].items())
        + ".",
        "",
    ]
    for method in s["methods"]:
        lines += [
            f"## {method}",
            "",
            "Each cell: MIA AUC / retain NLL relative to the retrained model / forget NLL (* = inside the band).",
            "",
        ]
        header = ["lr \\ epochs"] + [f"{e:g}" for e in s["epochs"]]
        cells = _matrix(
            report,
            method,
            lambda c: (
                f"{c['mia_auc']:.2f} / {c['nll']['retain'] / retr['nll']['retain'] - 1:+.1%}"
                f" / {c['nll']['forget']:.2f}{' *' if c['in_band'] else ''}"
            ),
        )
        rows = [[f"{lr:g}"] + row for lr, row in zip(s["learning_rates"], cells)]
        lines += [common.markdown_table(header, rows), ""]
        png = next((p for p in pngs if p.endswith(f"grid_{method}.png")), None)
        if png:
            lines += [f"![{method}]({png})", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
