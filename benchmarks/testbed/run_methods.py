#!/usr/bin/env python
"""Every registered unlearning method against the exactly retrained model, on the testbed of build.py, over seeds,
with a floor (a second retrained model) and a tuned comparison that never looks at the retrained model.

    python benchmarks/testbed/run_methods.py            # full testbed (builds what is not cached), ~40 min on 2 cores
    python benchmarks/testbed/run_methods.py --tiny --out-dir /tmp/x --cache-dir /tmp/c --seeds 1   # smoke run

Methods: `hf_unlearn.list_methods()` minus the question/answer-only ones (common.SKIPPED_METHODS, reported with
the reason), each at its preset's defaults (loss weights, betas; RMU steers the middle layer of the 4-layer model,
common.method_settings) under one protocol: AdamW, lr 2e-4 (cosine, no warmup, no weight decay), batch 8 forget
chunks (+ 8 paired in-distribution retain chunks for methods with a retain term), at most 10 epochs over the forget
set, and the paper's stopping rule: stop as soon as the forget NLL reaches the approximate set's NLL under the
original model (checked after every optimizer step with hf_unlearn.callbacks.UnlearningEvalCallback; those forward
passes count as compute). Methods that take unseen data (`unseen_dataset`: unseen_match) get the `unseen` split,
never-seen stdlib chunks disjoint from the approximate split that scores membership (common.unseen_split).

Why lr 2e-4: the paper's 2e-5 is for 6B models whose pre-training peak learning rate is ~3e-4 (so ~1/15 of it);
the testbed's models were pre-trained with a peak of 3e-3, and 3e-3 / 15 = 2e-4. grid.py shows what other
learning rates and budgets do.

Seeds: every method runs at `--seeds` seeds (the run's seed and its forget/retain pairing seed: forget batch order,
retain pairing, random labels, RMU's direction); mean and min-max over them are reported.

Floor: `retrained_seed1` (common.retrained_replica), the retrained recipe with another seed for the initial weights
and the data order, built once and cached beside the testbed. Its distance to the retrained model is what two
models that never saw the forget set differ by: no method can be expected to get closer.

Tuned comparison (`--tune`, default every method run, each with the same budget: the five learning rates of
`--tune-lrs`): for each listed method, the learning rate is picked from `--tune-lrs` (seed 0) by the
paper's guideline with data an unlearner has (the retrained model never selects): the LOSS-attack AUC of the forget
set against the unseen split closest to 0.5 without going below it, among the settings whose retain NLL is within
5% of the original model's; ties go to the cheaper run. The chosen setting then runs at the other seeds and is
scored against the retrained model like the defaults.

Reported per run and per method (mean, [min, max] over seeds): |dAUC| of the LOSS attack and of the strongest
attack (the largest |dAUC| over LOSS, zlib, Min-K% and Min-K%++ at K = 10..100%, each against the retrained model's
AUC for the same attack; forget vs approximate), the forget-NLL gap and the relative retain-NLL gap to the retrained
model, the mean per-token KL(P_retrained || P_model) on forget and on retain (hf_unlearn.losses.kl_sum), and the
compute (FLOPs = 6 P T with gradients + 2 P T forward-only) against pre-training the retrained model. The band:
|dAUC| <= 0.05 for LOSS and for the strongest attack and retain NLL within 5% of the retrained model's. The goal:
inside the band AND closer to the retrained model than the original by KL on forget, with KL on retain at most
10% above the original's.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

from benchmarks import harness  # noqa: E402  (common put the repository root on sys.path)

BAR = {"auc_tol": 0.05, "retain_tol": 0.05, "min_compute_ratio": 1000.0, "retain_kl_tol": 0.10}
# Every method gets the same tuning budget: these learning rates at seed 0 (half to ten times the default 2e-4).
TUNE_LRS = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3)
METRICS = (
    "auc_gap",
    "strongest_auc_gap",
    "forget_nll_gap",
    "retain_rel_gap",
    "kl_forget",
    "kl_retain",
    "compute_ratio_flops",
    "optimizer_steps",
)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.common_arguments(parser)
    defaults = common.UnlearnSettings()
    methods = common.document_methods()
    parser.add_argument("--methods", nargs="+", default=methods, choices=methods)
    parser.add_argument("--seeds", type=int, default=3, help="seeds per method (0..seeds-1)")
    parser.add_argument(
        "--one-seed", nargs="*", default=[], choices=methods, help="methods run at seed 0 only (to fit a time budget)"
    )
    parser.add_argument(
        "--tune",
        nargs="*",
        default=None,
        choices=methods,
        help="methods whose learning rate is tuned by the guideline (default: every method run; none: no tuning)",
    )
    parser.add_argument("--tune-lrs", nargs="+", type=float, default=list(TUNE_LRS))
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--max-epochs", type=float, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument(
        "--retain-weight", type=float, default=None, help="the retain term's weight (default: each method's preset)"
    )
    parser.add_argument("--no-stop", action="store_true", help="run every epoch (no stopping rule)")
    parser.add_argument("--no-floor", action="store_true", help="skip the second retrained model (the floor)")
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="NAME=VALUE",
        help="config values for every run beyond the presets' (e.g. unseen_match_tail_k=0.3); each must be a field "
        "of every method run",
    )
    parser.add_argument(
        "--add-to",
        default=None,
        metavar="JSON",
        help="an earlier methods.json of the same protocol: keep its runs of every method not in --methods and "
        "write the merged report (adds a method to a published comparison without rerunning the others)",
    )
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds {args.seeds}: run at least one seed")
    if args.tune is None:
        args.tune = list(args.methods)
    try:
        args.settings = parse_settings(args.set, args.methods)
    except ValueError as error:
        parser.error(str(error))
    common.quiet()
    if args.tiny:
        args.max_epochs = min(args.max_epochs, 1.0)
        args.batch_size = min(args.batch_size, 4)
    earlier = None  # compared with the settings this run uses (after --tiny's)
    if args.add_to:
        earlier = _load_json(args.add_to)
        differs = protocol_difference(earlier, args)
        if differs:
            parser.error(f"--add-to {args.add_to}: {differs}; rerun every method instead, or match the settings.")
    config = common.get_config(args.tiny)
    machine_start, threads, testbed, ctx = common.prepare(args, config)
    if earlier is not None and earlier["testbed"]["version"] != testbed.meta["version"]:
        parser.error(
            f"--add-to {args.add_to}: built from testbed {earlier['testbed']['version']}, this is "
            f"{testbed.meta['version']}; rerun every method."
        )

    def task(method, seed, lr, kind):
        return {
            "config": config,
            "cache_dir": args.cache_dir,
            "data_dir": args.data_dir,
            "threads": threads,
            "method": method,
            "learning_rate": lr,
            "epochs": args.max_epochs,
            "batch_size": args.batch_size,
            "retain_weight": args.retain_weight,
            "settings": args.settings,
            "stop": not args.no_stop,
            "seed": seed,
            "key": (kind, method, seed, lr),
        }

    tasks = [
        task(m, seed, args.learning_rate, "default")
        for m in args.methods
        for seed in range(1 if m in args.one_seed else args.seeds)
    ]
    tasks += [task(m, 0, lr, "tune") for m in args.tune for lr in args.tune_lrs if lr != args.learning_rate]
    results = common.run_tasks(tasks, args.jobs)
    by_key = {tuple(r["key"]): r for r in results}
    chosen = {}
    for m in args.tune:
        grid = [by_key.get(("tune", m, 0, lr)) or by_key.get(("default", m, 0, lr)) for lr in args.tune_lrs]
        chosen[m] = select_by_guideline([r for r in grid if r is not None], ctx["original_eval"], BAR["retain_tol"])
    more = [
        task(m, seed, pick["learning_rate"], "tuned")
        for m, pick in chosen.items()
        for seed in range(1, args.seeds)
        if pick is not None and pick["learning_rate"] != args.learning_rate
    ]
    results += common.run_tasks(more, args.jobs)
    if earlier is not None:
        results, chosen = merge_earlier(earlier, args, methods, results, chosen)
    floor = None
    if not args.no_floor:  # built on first use (one pre-training run), then cached
        path = common.retrained_replica(testbed, seed=1, threads=threads)
        floor = common.evaluate_model(ctx, path)
        floor["run"] = _load_json(os.path.join(path, "run.json"))
    report = make_report(testbed, ctx, results, args, machine_start, floor, chosen)
    if earlier is not None:
        report["command"] = f"{earlier['command']}, then {report['command']} (the earlier runs kept for the others)"
    text = markdown(report)
    harness.write_report(args.out_dir, "methods", report, text)
    plot(report, os.path.join(args.out_dir, "methods.png"))
    print(text)
    return report


def _load_json(path):
    import json

    with open(path) as handle:
        return json.load(handle)


# What makes two reports' runs comparable: the protocol settings and the testbed.
PROTOCOL = (
    "learning_rate",
    "max_epochs",
    "batch_size",
    "retain_weight",
    "set",
    "stopping_rule",
    "seeds",
    "tune_lrs",
    "tiny",
)


def parse_settings(pairs: list[str], methods: list[str]) -> dict:
    """`NAME=VALUE` pairs as config values (VALUE read as YAML: 0.3, true, null), each checked to be a field of every
    method's config class."""
    import dataclasses

    import yaml

    from hf_unlearn import get_method

    settings = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--set {pair!r}: write NAME=VALUE, e.g. unseen_match_tail_k=0.3.")
        settings[name] = yaml.safe_load(value)
        for method in methods:
            fields = {f.name for f in dataclasses.fields(get_method(method).config_class)}
            if name not in fields:
                raise ValueError(f"--set {name}: {method}'s config has no such field; run only methods that have it.")
    return settings


def run_settings(args) -> dict:
    """The settings a report records (its "settings"); those of `PROTOCOL` decide whether runs can be merged."""
    return {
        "learning_rate": args.learning_rate,
        "max_epochs": args.max_epochs,
        "batch_size": args.batch_size,
        "retain_weight": args.retain_weight,
        "set": args.settings,
        "stopping_rule": not args.no_stop,
        "jobs": args.jobs,
        "tiny": args.tiny,
        "seeds": args.seeds,
        "one_seed": args.one_seed,
        "tune": args.tune,
        "tune_lrs": args.tune_lrs,
    }


def protocol_difference(earlier: dict, args) -> str | None:
    """Why `earlier`'s runs cannot be merged with a run under `args` (None: they can)."""
    now = run_settings(args)
    for name in PROTOCOL:
        if earlier["settings"].get(name, {} if name == "set" else None) != now[name]:
            return f"its {name} is {earlier['settings'].get(name)!r}, this run's {now[name]!r}"
    return None


def merge_earlier(earlier: dict, args, methods: list[str], results: list[dict], chosen: dict):
    """`earlier`'s runs and tuning choices of the methods this run did not run, added to this run's; `args`'
    method lists become the union, in the registry's order."""
    ran = set(args.methods)
    kept = [r for r in earlier["runs"] if r["method"] not in ran]
    before = {r["method"] for r in kept}
    tuned = {m: pick for m, pick in earlier["tuning"].items() if m not in ran}
    args.methods = [m for m in methods if m in ran | before]
    args.tune = [m for m in methods if m in set(args.tune) | set(tuned)]
    args.one_seed = sorted(set(args.one_seed) | (set(earlier["settings"].get("one_seed", [])) - ran))
    order = {m: i for i, m in enumerate(args.methods)}
    return sorted(kept + results, key=lambda r: order[r["method"]]), {**tuned, **chosen}


def select_by_guideline(runs: list[dict], original: dict, retain_tol: float) -> dict | None:
    """The paper's guideline with an unlearner's data only: among runs whose retain NLL is within `retain_tol`
    (relative) of the original model's, the one whose forget-vs-unseen LOSS AUC is closest to 0.5 without going
    below it, ties to the cheapest (FLOPs). None qualifying: the closest to 0.5 from below among the retain-safe
    ones, else the one with the smallest retain gap; `selection` says which rule picked it."""
    base = original["nll"]["retain"]

    def retain_ok(r):
        return abs(r["nll"]["retain"] - base) / base <= retain_tol

    safe = [r for r in runs if retain_ok(r)]
    above = [r for r in safe if r["unseen_auc"] >= 0.5]
    if above:
        pick, rule = min(above, key=lambda r: (r["unseen_auc"] - 0.5, r["flops"])), "guideline"
    elif safe:
        pick, rule = min(safe, key=lambda r: (abs(r["unseen_auc"] - 0.5), r["flops"])), "closest AUC (all below 0.5)"
    elif runs:
        pick, rule = (
            min(runs, key=lambda r: abs(r["nll"]["retain"] - base)),
            "smallest retain gap (none within tolerance)",
        )
    else:
        return None
    return {
        "learning_rate": pick["learning_rate"],
        "selection": rule,
        "unseen_auc": pick["unseen_auc"],
        "retain_nll": pick["nll"]["retain"],
        "grid": [
            {
                "learning_rate": r["learning_rate"],
                "unseen_auc": r["unseen_auc"],
                "retain_nll": r["nll"]["retain"],
                "retain_ok": retain_ok(r),
                "flops": r["flops"],
            }
            for r in runs
        ],
    }


def scores(r: dict, retrained: dict, original: dict) -> dict:
    """A run's distances to the retrained model (see the module docstring) and whether it meets the band / goal."""
    band = common.acceptance(r, retrained, BAR["auc_tol"], BAR["retain_tol"])
    gaps = {
        a: abs(auc - retrained["attack_auc"][a]) for a, auc in r["attack_auc"].items() if a in retrained["attack_auc"]
    }
    strongest = max(gaps, key=lambda a: (gaps[a], a)) if gaps else "loss"
    out = {
        "auc_gap": band["auc_gap"],
        "strongest_attack": strongest,
        "strongest_auc_gap": gaps.get(strongest, band["auc_gap"]),
        "forget_nll_gap": r["nll"]["forget"] - retrained["nll"]["forget"],
        "retain_rel_gap": band["retain_rel_gap"],
        "kl_forget": r.get("kl_to_retrained", {}).get("forget", 0.0),
        "kl_retain": r.get("kl_to_retrained", {}).get("retain", 0.0),
    }
    out["in_band"] = bool(
        out["auc_gap"] <= BAR["auc_tol"]
        and out["strongest_auc_gap"] <= BAR["auc_tol"]
        and out["retain_rel_gap"] <= BAR["retain_tol"]
    )
    out["goal"] = bool(
        out["in_band"]
        and out["kl_forget"] < original["kl_to_retrained"]["forget"]
        and out["kl_retain"] <= (1 + BAR["retain_kl_tol"]) * original["kl_to_retrained"]["retain"]
    )
    # distance to the band in units of its tolerances: <= 1 inside
    out["band_distance"] = max(
        out["auc_gap"] / BAR["auc_tol"],
        out["strongest_auc_gap"] / BAR["auc_tol"],
        out["retain_rel_gap"] / BAR["retain_tol"],
    )
    return out


def summary(rows: list[dict]) -> dict:
    """Mean, min and max of every metric over a setting's seeds."""
    out = {
        "n": len(rows),
        "seeds": [r["seed"] for r in rows],
        "learning_rate": rows[0]["learning_rate"],
        "in_band_runs": sum(r["in_band"] for r in rows),
        "goal_runs": sum(r["goal"] for r in rows),
    }
    for metric in METRICS:
        values = [float(r[metric]) for r in rows]
        out[metric] = {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}
    out["in_band_mean"] = bool(
        out["auc_gap"]["mean"] <= BAR["auc_tol"]
        and out["strongest_auc_gap"]["mean"] <= BAR["auc_tol"]
        and out["retain_rel_gap"]["mean"] <= BAR["retain_tol"]
    )
    return out


def make_report(testbed, ctx, results, args, machine_start, floor, chosen) -> dict:
    retrained_run = testbed.meta["runs"]["retrained"]
    original_run = testbed.meta["runs"]["original"]
    retrained, original = ctx["retrained_eval"], ctx["original_eval"]
    rows = []
    for r in results:
        r = dict(r)
        r["kind"] = r["key"][0]
        r.update(scores(r, retrained, original))
        r["compute_ratio_flops"] = retrained_run["flops"] / r["flops"] if r["flops"] else float("inf")
        r["time_ratio_cpu"] = retrained_run["cpu_s"] / r["cpu_s"] if r["cpu_s"] else None
        r["meets_bar"] = bool(r["in_band"] and r["compute_ratio_flops"] >= BAR["min_compute_ratio"])
        rows.append(r)
    default_rows = [r for r in rows if r["kind"] == "default"]
    settings = {}
    for m in args.methods:
        settings[f"{m} (default)"] = summary([r for r in default_rows if r["method"] == m])
    for m, pick in chosen.items():
        if pick is None:
            continue
        by_seed = {}
        for r in rows:  # seed 0 from the grid (or the defaults), the other seeds from the tuned runs
            if r["method"] == m and r["learning_rate"] == pick["learning_rate"]:
                by_seed.setdefault(r["seed"], r)
        settings[f"{m} (tuned lr {pick['learning_rate']:g})"] = dict(summary(list(by_seed.values())), selection=pick)
    original_scores = scores(dict(original, attack_auc=original["attack_auc"]), retrained, original)
    floor_scores = scores(floor, retrained, original) if floor is not None else None
    best = (
        min(
            settings,
            key=lambda k: max(
                settings[k]["auc_gap"]["mean"] / BAR["auc_tol"],
                settings[k]["strongest_auc_gap"]["mean"] / BAR["auc_tol"],
                settings[k]["retain_rel_gap"]["mean"] / BAR["retain_tol"],
            ),
        )
        if settings
        else None
    )
    forget_tokens = testbed.meta["split_tokens"]["forget"]
    one_pass_ratio = retrained_run["flops"] / (6.0 * ctx["params"] * forget_tokens)
    return {
        "benchmark": "exact-retrain testbed: unlearning methods vs the retrained model",
        "date": common.now(),
        "command": common.command_line(),
        "machine": machine_start,
        "machine_end": common.machine_info(),
        "testbed": {
            k: testbed.meta[k]
            for k in (
                "version",
                "config",
                "documents",
                "document_bytes",
                "train_chunks",
                "forget_chunks_in_training",
                "splits",
                "split_tokens",
                "build_wall_s",
                "build_jobs",
                "machine",
                "built",
            )
        },
        "unseen_split_chunks": len(ctx["splits"]["unseen"]),
        "pretraining": {"original": _run_summary(original_run), "retrained": _run_summary(retrained_run)},
        "params": ctx["params"],
        "settings": run_settings(args),
        "skipped": harness.skipped_on_documents(),
        "target_forget_nll": original["nll"]["approximate"],
        "bar": BAR,
        "original": dict(original, **original_scores),
        "retrained": retrained,
        "floor": dict(floor, **floor_scores) if floor is not None else None,
        "methods": default_rows,
        "runs": rows,
        "summary": settings,
        "tuning": chosen,
        "one_forget_pass_compute_ratio": one_pass_ratio,
        "forget_share_of_pretraining_tokens": forget_tokens
        / (original_run["tokens"] / testbed.meta["config"]["epochs"]),
        "best_setting": best,
        "goal_met_by": [k for k, v in settings.items() if v["goal_runs"] == v["n"]],
        "bar_met_by": sorted({r["method"] for r in default_rows if r["meets_bar"]}),
    }


def _run_summary(run: dict) -> dict:
    return {k: run[k] for k in ("chunks", "tokens", "optimizer_steps", "params", "flops", "wall_s", "cpu_s", "threads")}


def _fmt_range(stat: dict) -> str:
    if stat["min"] == stat["max"]:
        return common.fmt(stat["mean"])
    return f"{common.fmt(stat['mean'])} [{common.fmt(stat['min'])}, {common.fmt(stat['max'])}]"


def markdown(report: dict) -> str:
    t, pre = report["testbed"], report["pretraining"]
    cfg = t["config"]
    retr, orig, floor = report["retrained"], report["original"], report["floor"]
    settings = report["settings"]
    lines = [
        "# Exact-retrain testbed: unlearning methods vs the retrained model",
        "",
        f"Date {report['date']}; command `{report['command']}`; machine: {report['machine']['cpu_model']}, "
        f"{report['machine']['cpu_count']} cores, torch {report['machine']['torch']}, transformers "
        f"{report['machine']['transformers']}, Python {report['machine']['python']}; load average at start "
        f"{', '.join(f'{x:.1f}' for x in report['machine']['load_average'])} (shared machine).",
        "",
        "## Testbed",
        "",
        f"Llama (hidden {cfg['hidden_size']}, {cfg['layers']} layers, {cfg['heads']} heads, BPE vocabulary "
        f"{cfg['vocab_size']}; {report['params']:,} parameters) pre-trained from scratch with `transformers.Trainer` "
        f"on {t['train_chunks']} chunks of {cfg['chunk_tokens']} tokens (stdlib code + books), {cfg['epochs']} epochs, "
        f"batch {cfg['batch_size']}, AdamW lr {cfg['learning_rate']:g} cosine. Forget set: {t['splits']['forget']} chunks "
        f"({t['split_tokens']['forget']} tokens) of {len(t['documents']['forget'])} stdlib modules. Approximate "
        f"(membership non-members): {t['splits']['approximate']} chunks of {len(t['documents']['approximate'])} stdlib "
        f"modules never trained on; unseen (handed to methods that take unseen data, and the tuning criterion): "
        f"{report['unseen_split_chunks']} chunks of other never-seen stdlib modules. Retain (evaluation): "
        f"{t['splits']['retain']} trained stdlib chunks; retain_train (the retain terms): {t['splits']['retain_train']} "
        f"other trained stdlib chunks; general: {t['splits'].get('general', 0)} trained book chunks. The retrained model: "
        "the same recipe (same tokenizer, initial weights, hyperparameters, epochs and per-epoch data order) with the "
        "forget chunks deleted. The floor (`retrained_seed1`): the retrained recipe with seed 1 for the initial weights "
        "and the data order.",
        "",
        common.markdown_table(
            ["model", "chunks seen", "tokens", "optimizer steps", "FLOPs (6PT)", "wall s", "CPU s (1 thread)"],
            [
                [name, r["chunks"], r["tokens"], r["optimizer_steps"], float(r["flops"]), r["wall_s"], r["cpu_s"]]
                for name, r in pre.items()
            ]
            + (
                [
                    [
                        "retrained_seed1 (floor)",
                        floor["run"]["chunks"],
                        floor["run"]["tokens"],
                        floor["run"]["optimizer_steps"],
                        float(floor["run"]["flops"]),
                        floor["run"]["wall_s"],
                        floor["run"]["cpu_s"],
                    ]
                ]
                if floor
                else []
            ),
        ),
        "",
        "Unlearning protocol: every method at its preset's defaults"
        + (f" but retain weight {settings['retain_weight']:g}" if settings.get("retain_weight") is not None else "")
        + "".join(f", {name} {value!r}" for name, value in (settings.get("set") or {}).items())
        + f", lr {settings['learning_rate']:g}, batch "
        f"{settings['batch_size']}, at most {settings['max_epochs']:g} epochs, stopping rule "
        f"{'on' if settings['stopping_rule'] else 'off'} (target forget NLL = approximate NLL of the original model), "
        f"{settings['seeds']} seeds"
        + (f" ({', '.join(settings['one_seed'])} at one seed)" if settings["one_seed"] else "")
        + ". Skipped: "
        + "; ".join(f"{m} ({why})" for m, why in report["skipped"].items())
        + ".",
        "",
        "## Summary: distance to the retrained model (mean [min, max] over seeds)",
        "",
        f"Band: |dAUC| <= {BAR['auc_tol']} for the LOSS attack and for the strongest attack (the largest |dAUC| over "
        f"LOSS, zlib, Min-K% and Min-K%++), retain NLL within {BAR['retain_tol']:.0%} of the retrained model's. Goal: in "
        f"the band, KL on forget below the original's and KL on retain at most {BAR['retain_kl_tol']:.0%} above the "
        "original's. KL = mean per-token KL(P_retrained || P_model). Forget-NLL gap: model minus retrained (< 0: still "
        "more likely than the retrained model finds it; > 0: past it).",
        "",
    ]
    header = [
        "setting",
        "seeds",
        "|dAUC| LOSS",
        "|dAUC| strongest",
        "forget NLL gap",
        "retain rel. gap",
        "KL forget",
        "KL retain",
        "retrain / unlearn FLOPs",
        "steps",
        "in band (runs)",
        "goal (runs)",
    ]

    def single(name, r):
        return [
            name,
            "-",
            r["auc_gap"],
            r["strongest_auc_gap"],
            r["forget_nll_gap"],
            r["retain_rel_gap"],
            r["kl_forget"],
            r["kl_retain"],
            "-",
            "-",
            "yes" if r["in_band"] else "no",
            "yes" if r["goal"] else "no",
        ]

    rows = []
    if floor is not None:
        rows.append(single("retrained_seed1 (floor)", floor))
    rows.append(single("original (no unlearning)", orig))
    for name, v in report["summary"].items():
        rows.append(
            [name, v["n"]]
            + [_fmt_range(v[m]) for m in METRICS]
            + [f"{v['in_band_runs']}/{v['n']}", f"{v['goal_runs']}/{v['n']}"]
        )
    lines += [
        common.markdown_table(header, rows),
        "",
        f"Retrained model's AUCs (forget vs approximate): LOSS {retr['mia_auc']:.3f}; strongest attack of each row: "
        "see methods.json (`runs[].strongest_attack`).",
        "",
    ]
    lines += ["![distance on forget vs damage on retain](methods.png)", ""]
    if report["tuning"]:
        lines += [
            "## Tuned by the guideline (the retrained model never selects)",
            "",
            "Criterion (seed 0): forget-vs-unseen LOSS AUC closest to 0.5 without going below, retain NLL within "
            f"{BAR['retain_tol']:.0%} of the original model's, cheapest on ties.",
            "",
        ]
        header = ["method", "lr", "forget-vs-unseen AUC", "retain NLL", "retain ok", "FLOPs", "chosen"]
        trows = []
        for m, pick in report["tuning"].items():
            if pick is None:
                continue
            for g in pick["grid"]:
                trows.append(
                    [
                        m,
                        f"{g['learning_rate']:g}",
                        g["unseen_auc"],
                        g["retain_nll"],
                        "yes" if g["retain_ok"] else "no",
                        float(g["flops"]),
                        pick["selection"] if g["learning_rate"] == pick["learning_rate"] else "",
                    ]
                )
        lines += [common.markdown_table(header, trows), ""]
    lines += ["## Every run", ""]
    header = [
        "method",
        "kind",
        "seed",
        "lr",
        "steps (max)",
        "stop",
        "forget NLL",
        "approx NLL",
        "retain NLL",
        "LOSS AUC",
        "strongest attack",
        "|dAUC| strongest",
        "KL forget",
        "KL retain",
        "FLOPs",
        "CPU s",
    ]
    rows = [
        [
            r["method"],
            r["kind"],
            r["seed"],
            f"{r['learning_rate']:g}",
            f"{r['optimizer_steps']} ({r['max_steps']})",
            "target" if (r["stop_reason"] or "").startswith("target") else (r["stop_reason"] or "budget"),
            r["nll"]["forget"],
            r["nll"]["approximate"],
            r["nll"]["retain"],
            r["mia_auc"],
            r["strongest_attack"],
            r["strongest_auc_gap"],
            r["kl_forget"],
            r["kl_retain"],
            float(r["flops"]),
            r["cpu_s"],
        ]
        for r in report["runs"]
    ]
    lines += [common.markdown_table(header, rows), ""]
    retrain = pre["retrained"]
    met = report["goal_met_by"]
    lines += [
        "## Verdict",
        "",
        (
            f"**Goal met** (every seed) by: {', '.join(met)}."
            if met
            else "**Goal not met** by any setting at every seed."
        )
        + f" Closest to the band (mean over seeds): {report['best_setting']}. Retraining costs "
        f"{float(retrain['flops']):.2e} FLOPs ({retrain['cpu_s']:.0f} CPU s).",
        "",
        f"Compute ceiling of this testbed: the forget set is {report['forget_share_of_pretraining_tokens']:.1%} of the "
        f"pre-training corpus, which is read {cfg['epochs']} times, so a single forward + backward pass over the forget "
        f"set and nothing else already costs 1/{report['one_forget_pass_compute_ratio']:.0f} of retraining: no method "
        "that reads the forget set once or more can reach 1000x here.",
        "",
    ]
    return "\n".join(lines)


def plot(report: dict, path: str) -> None:
    """Distance on forget (KL to the retrained model) against damage on retain (KL to it), mean and min-max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 6))
    orig = report["original"]
    for name, v in report["summary"].items():
        x, y = v["kl_forget"], v["kl_retain"]
        ax.errorbar(
            x["mean"],
            y["mean"],
            xerr=[[x["mean"] - x["min"]], [x["max"] - x["mean"]]],
            yerr=[[y["mean"] - y["min"]], [y["max"] - y["mean"]]],
            fmt="o" if "default" in name else "s",
            capsize=3,
            color="tab:green" if v["in_band_runs"] else "tab:blue",
        )
        ax.annotate(
            name.replace(" (default)", ""),
            (x["mean"], y["mean"]),
            fontsize=7,
            xytext=(4, 3),
            textcoords="offset points",
        )
    ax.scatter(
        [orig["kl_forget"]], [orig["kl_retain"]], marker="*", s=150, color="black", label="original (no unlearning)"
    )
    if report["floor"] is not None:
        ax.scatter(
            [report["floor"]["kl_forget"]],
            [report["floor"]["kl_retain"]],
            marker="P",
            s=120,
            color="tab:red",
            label="retrained_seed1 (floor)",
        )
    ax.axvline(orig["kl_forget"], color="grey", lw=0.8, ls="--")
    ax.axhline((1 + BAR["retain_kl_tol"]) * orig["kl_retain"], color="grey", lw=0.8, ls=":")
    ax.set_xlabel("KL(P_retrained || P_model) on forget (nats/token)")
    ax.set_ylabel("KL(P_retrained || P_model) on retain (nats/token)")
    ax.set_title(
        "Distance on forget vs damage on retain (goal: left of the dashed line, below the dotted one)\n"
        "green: inside the AUC / retain-NLL band on at least one seed",
        fontsize=9,
    )
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
