#!/usr/bin/env python
"""Deletion requests over time on the exact-retrain testbed: successive requests vs one batched run vs retraining.

    python benchmarks/testbed/sequential.py --with-scaling   # both reports (builds what is not cached)
    python benchmarks/testbed/sequential.py --tiny --cache-dir /tmp/c --out-dir /tmp/x   # smoke run

The testbed is common.SEQUENTIAL: the main testbed's model and pre-training recipe on a smaller corpus with more
forget modules, split in their seeded order into `REQUESTS` disjoint deletion requests of equal module count. Models
pre-trained (cached beside the testbed, two at a time): the original, the model retrained without all requests
(the testbed's own `retrained`), and the models retrained without request 1's first half, request 1, requests 1-2
and requests 1-3 (common.retrained_without).

Sequential: request k unlearns request k's chunks from the model request k-1 left (request 1: the original); that
starting model is also the frozen reference of the methods that have one, as when a user runs `hf-unlearn train`
on its own output. Batched: one run unlearns the union of all requests from the original. Every run is
common.unlearn at the method's preset defaults under run_methods.py's protocol (lr, batch, at most 10 epochs over
its own forget set) and the paper's stopping rule with the target measured on the original model (the approximate
set's NLL before any unlearning), as the request ledger carries it.

After request k the model is scored against the model retrained without requests 1..k, on the forget set of
requests 1..k, with run_methods.scores (|dAUC| LOSS and strongest attack, forget-NLL gap, retain gap, KL on forget
and on retain); retain damage is also given against the original model, compute as FLOPs (6PT + 2PT) and tokens,
cumulative, against one retraining and against a retraining after every request. Earlier requests: each earlier
request's LOSS AUC (its chunks vs approximate) and forget NLL against the same retrained model's, after every
later request; it "came back" when its NLL fell more than `StoppingCriteria.max_earlier_nll_drop` below its level
right after its own request (hf_unlearn.earlier's rule). One seed by default (`--seeds`).

scaling.py runs the other view of the same build: batched runs on nested forget sets (request 1's first half,
request 1, requests 1-2, all requests), each against its own retrained model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import run_methods  # noqa: E402

REQUESTS = 4
METHODS = ("ga_descent", "ga_kl", "npo", "simnpo", "unseen_match")


def get_config(tiny: bool) -> common.TestbedConfig:
    return common.TINY_SEQUENTIAL if tiny else common.SEQUENTIAL


def requests_of(testbed) -> list[list[str]]:
    """The forget documents split, in their seeded order, into `REQUESTS` consecutive groups of equal count."""
    docs = testbed.meta["documents"]["forget"]
    size = len(docs) // REQUESTS
    if size < 2:
        raise ValueError(f"{len(docs)} forget documents: need at least {2 * REQUESTS} for {REQUESTS} requests.")
    return [docs[i * size : (i + 1) * size] for i in range(REQUESTS)]


def stages_of(requests: list[list[str]]) -> dict[str, list[str]]:
    """Nested forget sets: `half1` (request 1's first half), then requests 1..k as `r1`, `r12`, ... ."""
    out = {"half1": requests[0][: len(requests[0]) // 2]}
    for k in range(1, len(requests) + 1):
        out["r" + "".join(str(i) for i in range(1, k + 1))] = [d for r in requests[:k] for d in r]
    return out


def all_requests() -> str:
    """The stage of every request."""
    return sequence_stage(REQUESTS)


def build_all(args, config) -> tuple:
    """The testbed (original + retrained without every request) and the partial retrains, cached. Returns
    (testbed, stages, {stage: retrained model path})."""
    threads = common.threads_for(args)
    testbed = common.build(config, data_dir=args.data_dir, cache_dir=args.cache_dir, jobs=args.jobs, threads=threads)
    stages = stages_of(requests_of(testbed))
    full = all_requests()
    partial = {name: docs for name, docs in stages.items() if name != full}
    paths = common.retrained_without(testbed, partial, jobs=args.jobs, threads=threads)
    paths[full] = testbed.retrained
    common.unseen_split(testbed)  # built here, once, before any worker reads it
    return testbed, stages, paths


def _load_json(path: str):
    with open(path) as handle:
        return json.load(handle)


def retrain_run(testbed, path: str) -> dict:
    """The pre-training record (tokens, FLOPs, times) of a retrained model of the build."""
    if path == testbed.retrained:
        return testbed.meta["runs"]["retrained"]
    return _load_json(os.path.join(path, "run.json"))


# ============================================================================ workers: evaluation context


_CTX: dict = {}
COLUMNS = ["input_ids", "attention_mask", "labels"]


def context(task: dict) -> dict:
    """The testbed, its splits, one forget split per request and per stage, the original model (once per process);
    the stages' retrained references are added on first use (`stage`)."""
    config = task["config"]
    common.set_threads(task["threads"])
    if _CTX.get("version") == config.version:
        return _CTX
    import datasets

    from hf_unlearn.evaluation.membership import target_texts
    from hf_unlearn.evaluation.scores import score_examples

    testbed = common.build(config, data_dir=task["data_dir"], cache_dir=task["cache_dir"], log=lambda *a: None)
    tokenizer = testbed.tokenizer()
    base = testbed.splits()
    base["unseen"] = common.unseen_split(testbed)
    train = datasets.load_from_disk(os.path.join(testbed.root, "train_chunks"))
    requests = requests_of(testbed)

    def forget_of(docs):
        chosen = set(docs)
        rows = [i for i, (f, d) in enumerate(zip(train["is_forget"], train["doc"])) if f and d in chosen]
        return train.select(rows).select_columns(COLUMNS)

    _CTX.clear()
    _CTX.update(
        version=config.version,
        testbed=testbed,
        tokenizer=tokenizer,
        pad=tokenizer.pad_token_id,
        base=base,
        requests=[forget_of(docs) for docs in requests],
        stage_forget={name: forget_of(docs) for name, docs in stages_of(requests).items()},
        approximate_texts=target_texts(base["approximate"], tokenizer),
        original=common.load_model(testbed.original),
        stages={},
    )
    _CTX["params"] = common.count_params(_CTX["original"])
    # the paper's stopping target, as run_methods.py's: the original model's mean NLL on the approximate split
    _CTX["target"] = score_examples(_CTX["original"], base["approximate"], _CTX["pad"], batch_size=8).mean_nll
    return _CTX


def request_scores(ctx: dict, model) -> list[dict]:
    """Each request's forget NLL and LOSS-attack AUC (its chunks vs approximate) under `model`."""
    from hf_unlearn.evaluation.metrics import roc_auc
    from hf_unlearn.evaluation.scores import score_examples

    approximate = score_examples(model, ctx["base"]["approximate"], ctx["pad"], batch_size=8).example_nll.numpy()
    out = []
    for split in ctx["requests"]:
        scores = score_examples(model, split, ctx["pad"], batch_size=8)
        out.append({"nll": scores.mean_nll, "loss_auc": roc_auc(-scores.example_nll.numpy(), -approximate)})
    return out


def stage(ctx: dict, name: str, path: str) -> dict:
    """Splits (forget = the stage's chunks), the retrained model's reference and evaluation, and the original's
    evaluation against it, for stage `name` whose retrained model is at `path`."""
    if name in ctx["stages"]:
        return ctx["stages"][name]
    from hf_unlearn.evaluation.membership import target_texts

    splits = dict(ctx["base"], forget=ctx["stage_forget"][name])
    texts = {"forget": target_texts(splits["forget"], ctx["tokenizer"]), "approximate": ctx["approximate_texts"]}
    retrained = common.load_model(path)
    reference = common.Reference(retrained, splits, ctx["pad"])
    retrained_eval = common.evaluate(retrained, splits, ctx["pad"], texts=texts)
    retrained_eval["requests"] = request_scores(ctx, retrained)
    original_eval = common.evaluate(ctx["original"], splits, ctx["pad"], reference, retrained_eval["nll"], texts=texts)
    original_eval["requests"] = request_scores(ctx, ctx["original"])
    ctx["stages"][name] = {
        "splits": splits,
        "texts": texts,
        "reference": reference,
        "retrained": retrained_eval,
        "original": original_eval,
    }
    return ctx["stages"][name]


def assess(ctx: dict, model, name: str, path: str) -> dict:
    """`model` against the model retrained without stage `name`: common.evaluate + run_methods.scores, the retain
    and general damage relative to the original model, and every request's NLL / LOSS AUC."""
    st = stage(ctx, name, path)
    r = common.evaluate(model, st["splits"], ctx["pad"], st["reference"], st["retrained"]["nll"], texts=st["texts"])
    r.update(run_methods.scores(r, st["retrained"], st["original"]))
    base = st["original"]["nll"]
    r["retain_damage"] = (r["nll"]["retain"] - base["retain"]) / base["retain"]
    if "general" in r["nll"]:
        r["general_damage"] = (r["nll"]["general"] - base["general"]) / base["general"]
    r["requests"] = request_scores(ctx, model)
    r["stage"] = name
    return r


def _unlearn(ctx: dict, task: dict, forget, start: str | None) -> tuple:
    splits = {"forget": forget, "retain_train": ctx["base"]["retain_train"]}
    model, info = common.unlearn(
        ctx["testbed"],
        splits,
        task["method"],
        task["learning_rate"],
        task["epochs"],
        task["batch_size"],
        target_nll=ctx["target"],
        retain_weight=None,
        seed=task["seed"],
        unseen=ctx["base"]["unseen"],
        start=start,
    )
    info["flops"] = 6.0 * ctx["params"] * info["train_tokens"] + 2.0 * ctx["params"] * info["forward_tokens"]
    info["forget_chunks"] = len(forget)
    return model, info


def run_task(task: dict) -> dict:
    """Worker entry. `task["kind"]` "sequential": the method's chain over every request, assessed after each;
    "batched": one run on stage `task["stage"]` from the original model."""
    ctx = context(task)
    out = {"kind": task["kind"], "method": task["method"], "seed": task["seed"], "learning_rate": task["learning_rate"]}
    if task["kind"] == "batched":
        name = task["stage"]
        model, info = _unlearn(ctx, task, ctx["stage_forget"][name], None)
        out.update(stage=name, result=dict(assess(ctx, model, name, task["paths"][name]), **info))
        out["references"] = stage_references(ctx)
        return out
    steps, start = [], None
    with tempfile.TemporaryDirectory(prefix="testbed_sequential_") as scratch:
        for k, forget in enumerate(ctx["requests"], start=1):
            model, info = _unlearn(ctx, task, forget, start)
            start = os.path.join(scratch, f"request{k}")
            model.save_pretrained(start)
            name = sequence_stage(k)
            steps.append(dict(assess(ctx, model, name, task["paths"][name]), **info))
    out["steps"] = steps
    out["references"] = stage_references(ctx)
    return out


def sequence_stage(k: int) -> str:
    """The stage (forget set) of requests 1..k."""
    return "r" + "".join(str(i) for i in range(1, k + 1))


def stage_references(ctx: dict) -> dict:
    """The retrained and the original model's evaluations of every stage this process has built, the original's
    with its distances (run_methods.scores) to the retrained model."""
    out = {}
    for name, st in ctx["stages"].items():
        original = dict(st["original"])
        original.update(run_methods.scores(original, st["retrained"], st["original"]))
        original["retain_damage"] = original["general_damage"] = 0.0
        out[name] = {"retrained": st["retrained"], "original": original}
    return out


def reference_evals(task: dict, names, known: dict) -> tuple[dict, float, int]:
    """`stage_references` of the stages `names` (those missing from `known` evaluated in this process), the
    stopping target and the parameter count."""
    ctx = context(task)
    for name in names:
        if name not in known:
            stage(ctx, name, task["paths"][name])
    return {name: known.get(name) or stage_references(ctx)[name] for name in names}, ctx["target"], ctx["params"]


def run_all(tasks: list[dict], jobs: int, log=print) -> list[dict]:
    """`run_task` over `tasks` in `jobs` processes (one torch thread each) or in this process (jobs=1)."""
    return common.run_tasks(tasks, jobs, log, worker=run_task, summary=describe)


def describe(result: dict) -> str:
    rows = result["steps"] if result["kind"] == "sequential" else [result["result"]]
    return f"{result['method']:>12} {result['kind']:<10} " + " | ".join(
        f"{r['stage']}: steps {r['optimizer_steps']} |dAUC| {r['auc_gap']:.3f} KL-f {r['kl_forget']:.3f} "
        f"retain {r['retain_damage']:+.3f}"
        for r in rows
    )


# ============================================================================ command line and reports


def parse(argv, mode: str):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.common_arguments(parser)
    defaults = common.UnlearnSettings()
    methods = common.document_methods()
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=methods)
    parser.add_argument("--seeds", type=int, default=1, help="seeds per method (0..seeds-1)")
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--max-epochs", type=float, default=defaults.epochs, help="epochs over each run's forget set")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--build-only", action="store_true", help="pre-train (and cache) the models, run nothing")
    parser.add_argument(
        "--reuse-results",
        action="store_true",
        help="write the reports from the last run (its results, date, command and settings, kept in the testbed's "
        "cache folder) without running",
    )
    if mode == "sequential":
        parser.add_argument(
            "--with-scaling", action="store_true", help="also run scaling.py's batched runs and write scaling.*"
        )
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds {args.seeds}: run at least one seed")
    if args.tiny:
        args.max_epochs = min(args.max_epochs, 1.0)
        args.batch_size = min(args.batch_size, 4)
    return args


def main(argv=None, mode: str = "sequential") -> dict:
    """Build, run and report; `mode` "sequential" (sequential.*, and scaling.* with --with-scaling) or "scaling"."""
    import time

    args = parse(argv, mode)
    common.quiet()
    machine_start = common.machine_info()
    threads = common.threads_for(args)
    common.set_threads(threads)
    config = get_config(args.tiny)
    testbed, stages, paths = build_all(args, config)
    if args.build_only:
        return {"stages": sorted(paths)}
    wall = time.perf_counter()
    full = all_requests()
    sequential = mode == "sequential"
    scaling = mode == "scaling" or getattr(args, "with_scaling", False)
    batched = list(dict.fromkeys(([full] if sequential else []) + (scaling_stages() if scaling else [])))
    if sequential:  # request 1 alone is the sequential chain's first run
        batched = [s for s in batched if s != sequence_stage(1)]
    base = {
        "config": config,
        "cache_dir": args.cache_dir,
        "data_dir": args.data_dir,
        "threads": threads,
        "learning_rate": args.learning_rate,
        "epochs": args.max_epochs,
        "batch_size": args.batch_size,
        "paths": paths,
    }
    tasks = []  # the longest first: chains, then batched runs by decreasing forget set
    for seed in range(args.seeds):
        for m in args.methods:
            if sequential:
                tasks.append(dict(base, kind="sequential", method=m, seed=seed))
    for name in sorted(batched, key=lambda s: -len(stages[s])):
        tasks += [
            dict(base, kind="batched", method=m, seed=seed, stage=name)
            for seed in range(args.seeds)
            for m in args.methods
        ]
    saved = os.path.join(testbed.root, f"last_{mode}_results.json")  # local: the runs and how they were made
    if args.reuse_results:
        kept = _load_json(saved)
    else:
        results = run_all(tasks, args.jobs)
        settings = {
            "methods": args.methods,
            "seeds": args.seeds,
            "learning_rate": args.learning_rate,
            "max_epochs": args.max_epochs,
            "batch_size": args.batch_size,
            "jobs": args.jobs,
            "tiny": args.tiny,
            "retain_weight": "preset default",
            "stopping_rule": "forget NLL reaches the original model's approximate NLL",
        }
        run = {
            "date": common.now(),
            "command": common.command_line(),
            "machine": machine_start,
            "machine_end": common.machine_info(),
            "wall_s": time.perf_counter() - wall,
            "settings": settings,
        }
        kept = {"run": run, "results": results}
        common.write_json(saved, kept)
    results, run = kept["results"], kept["run"]
    known = {name: ref for r in results for name, ref in r["references"].items()}
    refs, target, params = reference_evals(base, list(stages), known)
    shared = {
        **{k: run[k] for k in ("date", "command", "machine", "machine_end", "wall_s")},
        "testbed": {
            k: testbed.meta[k] for k in ("version", "config", "train_chunks", "splits", "build_wall_s", "built")
        },
        "pretraining": {name: _run_summary(retrain_run(testbed, path)) for name, path in paths.items()},
        "original_pretraining": _run_summary(testbed.meta["runs"]["original"]),
        "pretraining_jobs": testbed.meta["build_jobs"],
        "stages": stage_sizes(testbed, stages),
        "params": params,
        "settings": run["settings"],
        "target_forget_nll": target,
        "bar": run_methods.BAR,
        "references": refs,
    }
    reports = {}
    if sequential:
        reports["sequential"] = sequential_report(shared, results, refs, paths, testbed)
    if scaling:
        reports["scaling"] = scaling_report(shared, results, refs, stages)
    os.makedirs(args.out_dir, exist_ok=True)
    for name, report in reports.items():
        common.write_json(os.path.join(args.out_dir, f"{name}.json"), report)
        (plot_sequential if name == "sequential" else plot_scaling)(report, os.path.join(args.out_dir, f"{name}.png"))
        text = (markdown_sequential if name == "sequential" else markdown_scaling)(report)
        with open(os.path.join(args.out_dir, f"{name}.md"), "w") as handle:
            handle.write(text)
        print(text)
    return reports


def scaling_stages() -> list[str]:
    """The nested forget sets of scaling.py: request 1's first half, request 1, requests 1-2, every request."""
    return ["half1", sequence_stage(1), sequence_stage(2), all_requests()]


def _run_summary(run: dict) -> dict:
    return {k: run[k] for k in ("chunks", "tokens", "optimizer_steps", "flops", "wall_s", "cpu_s", "threads")}


def stage_sizes(testbed, stages: dict) -> dict:
    """Documents, chunks, tokens and share of the training corpus (tokens of one epoch) of every stage."""
    import datasets

    train = datasets.load_from_disk(os.path.join(testbed.root, "train_chunks"))
    epoch_tokens = sum(len(x) for x in train["input_ids"])
    out = {}
    for name, docs in stages.items():
        chosen = set(docs)
        lengths = [len(x) for x, f, d in zip(train["input_ids"], train["is_forget"], train["doc"]) if f and d in chosen]
        out[name] = {
            "documents": len(docs),
            "chunks": len(lengths),
            "tokens": sum(lengths),
            "share": sum(lengths) / epoch_tokens,
        }
    return out


STEP_FIELDS = (
    "stage",
    "nll",
    "mia_auc",
    "attack_auc",
    "unseen_auc",
    "kl_to_retrained",
    "auc_gap",
    "strongest_attack",
    "strongest_auc_gap",
    "forget_nll_gap",
    "retain_rel_gap",
    "kl_forget",
    "kl_retain",
    "in_band",
    "band_distance",
    "retain_damage",
    "general_damage",
    "requests",
    "optimizer_steps",
    "max_steps",
    "stop_reason",
    "train_tokens",
    "forward_tokens",
    "token_detail",
    "flops",
    "forget_chunks",
    "wall_s",
    "cpu_s",
)


def _trim(r: dict) -> dict:
    return {k: r[k] for k in STEP_FIELDS if k in r}


def sequential_report(shared: dict, results: list[dict], refs: dict, paths: dict, testbed) -> dict:
    """Per chain: every step's distances, cumulative compute against retraining, and the earlier requests."""
    from hf_unlearn.callbacks import StoppingCriteria

    drop = StoppingCriteria().max_earlier_nll_drop
    retrain_flops = {name: float(shared["pretraining"][name]["flops"]) for name in paths}
    chains = []
    for res in (r for r in results if r["kind"] == "sequential"):
        steps, flops, tokens, retrain_each = [], 0.0, 0, 0.0
        for k, raw in enumerate(res["steps"], start=1):
            step = _trim(raw)
            name = sequence_stage(k)
            flops += step["flops"]
            tokens += step["train_tokens"] + step["forward_tokens"]
            retrain_each += retrain_flops[name]
            retrained = refs[name]["retrained"]["requests"]
            earlier = []
            for j in range(1, k):
                now, own = step["requests"][j - 1], res["steps"][j - 1]["requests"][j - 1]
                earlier.append(
                    {
                        "request": j,
                        "nll": now["nll"],
                        "nll_after_own_request": own["nll"],
                        "retrained_nll": retrained[j - 1]["nll"],
                        "loss_auc": now["loss_auc"],
                        "retrained_loss_auc": retrained[j - 1]["loss_auc"],
                        "auc_gap": abs(now["loss_auc"] - retrained[j - 1]["loss_auc"]),
                        "came_back": bool(now["nll"] < (1 - drop) * own["nll"]),
                    }
                )
            step.update(
                request=k,
                cumulative_flops=flops,
                cumulative_tokens=tokens,
                retrain_over_unlearn=retrain_flops[name] / flops,
                retrain_each_over_unlearn=retrain_each / flops,
                earlier=earlier,
            )
            steps.append(step)
        chains.append({"method": res["method"], "seed": res["seed"], "steps": steps})
    batched = [
        dict(
            _trim(r["result"]),
            method=r["method"],
            seed=r["seed"],
            requests=len(r["stage"]) - 1 if r["stage"].startswith("r") else None,
            retrain_over_unlearn=retrain_flops[r["stage"]] / r["result"]["flops"],
            request_scores=r["result"]["requests"],
        )
        for r in results
        if r["kind"] == "batched" and r["stage"].startswith("r")
    ]
    return dict(
        shared,
        benchmark="exact-retrain testbed: sequential vs batched unlearning of successive deletion requests",
        max_earlier_nll_drop=drop,
        sequential=chains,
        batched=batched,
    )


def scaling_report(shared: dict, results: list[dict], refs: dict, stages: dict) -> dict:
    """Per method and nested forget set: the batched run's distances and compute (request 1 alone: the chain's first
    run when the sequential runs are in `results`)."""
    order = scaling_stages()
    rows = []
    for r in results:
        if r["kind"] == "batched" and r["stage"] in order:
            rows.append(dict(_trim(r["result"]), method=r["method"], seed=r["seed"]))
        elif r["kind"] == "sequential":
            rows.append(dict(_trim(r["steps"][0]), method=r["method"], seed=r["seed"]))
    for row in rows:
        row["share"] = shared["stages"][row["stage"]]["share"]
        row["retrain_over_unlearn"] = float(shared["pretraining"][row["stage"]]["flops"]) / row["flops"]
    rows.sort(key=lambda r: (r["method"], r["seed"], order.index(r["stage"])))
    return dict(
        shared,
        benchmark="exact-retrain testbed: unlearning vs retraining as the forget set grows (nested forget sets)",
        order=order,
        runs=rows,
    )


def _stop(r: dict) -> str:
    return "target" if (r.get("stop_reason") or "").startswith("target") else (r.get("stop_reason") or "budget")


def _header(report: dict, title: str) -> list[str]:
    m, cfg, st = report["machine"], report["testbed"]["config"], report["stages"]
    full = max(st, key=lambda n: st[n]["chunks"])
    settings = report["settings"]
    return [
        f"# {title}",
        "",
        f"Date {report['date']}; command `{report['command']}`; wall time {report['wall_s'] / 60:.0f} min for the "
        f"unlearning runs and evaluations with {report['settings']['jobs']} job(s) (pre-training: below); machine: "
        f"{m['cpu_model']}, {m['cpu_count']} cores, "
        f"torch {m['torch']}, transformers {m['transformers']}, Python {m['python']}; load average at start "
        f"{', '.join(f'{x:.1f}' for x in m['load_average'])} (shared machine).",
        "",
        f"Testbed `{report['testbed']['version']}`: the main testbed's model (Llama, hidden {cfg['hidden_size']}, "
        f"{cfg['layers']} layers, {report['params']:,} parameters) and pre-training recipe ({cfg['epochs']} epochs, "
        f"batch {cfg['batch_size']}, lr {cfg['learning_rate']:g}) on {report['testbed']['train_chunks']} chunks, "
        f"{st[full]['documents']} of whose stdlib modules ({st[full]['chunks']} chunks, {st[full]['share']:.1%} of "
        f"the training tokens) are split into {REQUESTS} disjoint requests of {st[full]['documents'] // REQUESTS} "
        f"modules. Unlearning: {', '.join(settings['methods'])} at their preset defaults, lr "
        f"{settings['learning_rate']:g}, batch {settings['batch_size']}, at most {settings['max_epochs']:g} epochs "
        f"over each run's forget set, stopping rule: forget NLL reaches {report['target_forget_nll']:.3f} (the "
        f"original model's approximate NLL), {settings['seeds']} seed(s)."
        + (" One seed: three did not fit the time budget." if settings["seeds"] == 1 else ""),
        "",
        "Pre-training (cached; the original and the full retrain two at a time, then the partial retrains two at a "
        f"time; {report['pretraining_jobs']} job(s), one thread each):",
        "",
        common.markdown_table(
            ["model", "chunks seen", "tokens", "optimizer steps", "FLOPs (6PT)", "wall s", "CPU s"],
            [
                [name, r["chunks"], r["tokens"], r["optimizer_steps"], float(r["flops"]), r["wall_s"], r["cpu_s"]]
                for name, r in [("original", report["original_pretraining"])]
                + [(f"retrained without {n}", r) for n, r in report["pretraining"].items()]
            ],
        ),
        "",
        "Forget sets: `half1` = request 1's first half (its first module(s)), `r1` = request 1, `r12` = requests 1-2, "
        "and so on.",
        "",
        "Distances (run_methods.scores, against the model retrained without the forget set of the row): |dAUC| of "
        "the LOSS attack and of the strongest attack (forget vs approximate), forget-NLL gap (model minus retrained), "
        "KL(P_retrained || P_model) per token on forget and on retain. Retain damage: relative retain-NLL increase "
        "over the original model. Compute: FLOPs = 6PT with gradients + 2PT forward-only, against pre-training the "
        "retrained model.",
        "",
    ]


def markdown_sequential(report: dict) -> str:
    lines = _header(report, "Exact-retrain testbed: successive deletion requests, sequential vs batched")
    st = report["stages"]
    lines += [
        "Requests: "
        + ", ".join(
            f"{k}: {st[sequence_stage(k)]['chunks'] - (st[sequence_stage(k - 1)]['chunks'] if k > 1 else 0)} chunks"
            for k in range(1, REQUESTS + 1)
        )
        + f" (each ~{st[sequence_stage(1)]['share']:.1%} of the training tokens). Sequential: request k starts from "
        "request k-1's output (which is also the reference of the methods that have one); batched: the union of "
        "requests 1..k from the original model.",
        "",
        "## After each request: distance to the model retrained without the requests so far",
        "",
    ]
    header = ["method", "protocol", "requests", *DISTANCE_COLUMNS, "FLOPs (cumulative)", "retrain / unlearn"] + [
        "retrain each time / unlearn"
    ]
    rows = []
    for k in range(1, REQUESTS + 1):
        rows.append(_original_row("-", k, report["references"][sequence_stage(k)]["original"]) + ["-", "-", "-"])
    for chain in report["sequential"]:
        for s in chain["steps"]:
            rows.append(
                _distance_row(chain["method"], "sequential", s["request"], s, s["cumulative_flops"])
                + [s["retrain_over_unlearn"], s["retrain_each_over_unlearn"]]
            )
    for b in report["batched"]:
        rows.append(
            _distance_row(b["method"], "batched", b["requests"], b, b["flops"]) + [b["retrain_over_unlearn"], "-"]
        )
    lines += [common.markdown_table(header, rows), "", "![distance and retain damage vs requests](sequential.png)", ""]
    lines += [
        "## Earlier requests after later ones",
        "",
        f"Came back: its NLL fell more than {report['max_earlier_nll_drop']:.0%} below its level right after its own "
        "request (hf_unlearn's earlier-forget-set rule). |dAUC|: its chunks vs approximate, LOSS attack, against the "
        "model retrained without the requests so far.",
        "",
    ]
    header = [
        "method",
        "after request",
        "earlier request",
        "NLL",
        "NLL after its own request",
        "retrained NLL",
        "|dAUC| LOSS",
        "came back",
    ]
    rows = [
        [
            c["method"],
            s["request"],
            e["request"],
            e["nll"],
            e["nll_after_own_request"],
            e["retrained_nll"],
            e["auc_gap"],
            "yes" if e["came_back"] else "no",
        ]
        for c in report["sequential"]
        for s in c["steps"]
        for e in s["earlier"]
    ]
    lines += [common.markdown_table(header, rows), ""]
    lines += ["## After all requests: sequential vs batched", ""]
    header = [
        "method",
        "protocol",
        "|dAUC| strongest",
        "KL forget",
        "KL retain",
        "retain damage",
        "FLOPs",
        "retrain / unlearn",
        "earlier requests came back",
    ]
    rows = []
    for c in report["sequential"]:
        s = c["steps"][-1]
        back = sum(e["came_back"] for e in s["earlier"])
        rows.append(
            [
                c["method"],
                "sequential",
                s["strongest_auc_gap"],
                s["kl_forget"],
                s["kl_retain"],
                s["retain_damage"],
                s["cumulative_flops"],
                s["retrain_over_unlearn"],
                f"{back}/{len(s['earlier'])}",
            ]
        )
        for b in report["batched"]:
            if b["method"] == c["method"] and b["seed"] == c["seed"] and b["requests"] == REQUESTS:
                rows.append(
                    [
                        b["method"],
                        "batched",
                        b["strongest_auc_gap"],
                        b["kl_forget"],
                        b["kl_retain"],
                        b["retain_damage"],
                        b["flops"],
                        b["retrain_over_unlearn"],
                        "-",
                    ]
                )
    lines += [common.markdown_table(header, rows), ""]
    return "\n".join(lines)


# The measures of every row of both reports, after the row's three label columns.
DISTANCE_COLUMNS = [
    "steps",
    "stop",
    "|dAUC| LOSS",
    "|dAUC| strongest",
    "forget NLL gap",
    "KL forget",
    "KL retain",
    "retain damage",
    "general damage",
]


def _original_row(label, stage, o: dict) -> list:
    """The untouched original model's row (no steps, no damage) under the two labels after the method column."""
    return ["original (no unlearning)", label, stage, "-", "-", o["auc_gap"], o["strongest_auc_gap"]] + [
        o["forget_nll_gap"],
        o["kl_forget"],
        o["kl_retain"],
        0.0,
        0.0,
    ]


def _distance_row(method, protocol, k, r, flops) -> list:
    return [
        method,
        protocol,
        k,
        r["optimizer_steps"],
        _stop(r),
        r["auc_gap"],
        f"{common.fmt(r['strongest_auc_gap'])} ({r['strongest_attack']})",
        r["forget_nll_gap"],
        r["kl_forget"],
        r["kl_retain"],
        r["retain_damage"],
        r.get("general_damage"),
        float(flops),
    ]


def markdown_scaling(report: dict) -> str:
    lines = _header(report, "Exact-retrain testbed: unlearning as the forget set grows (nested forget sets)")
    st = report["stages"]
    lines += [
        "Forget sets (nested): "
        + ", ".join(f"{n}: {st[n]['chunks']} chunks ({st[n]['share']:.1%})" for n in report["order"])
        + "; each is one batched run from the original model, scored against the model retrained without it.",
        "",
    ]
    header = ["method", "forget set", "share", *DISTANCE_COLUMNS, "FLOPs", "retrain / unlearn"]
    rows = []
    for n in report["order"]:
        rows.append(_original_row(n, f"{st[n]['share']:.1%}", report["references"][n]["original"]) + ["-", "-"])
    for r in report["runs"]:
        rows.append(
            _distance_row(r["method"], r["stage"], f"{r['share']:.1%}", r, r["flops"]) + [r["retrain_over_unlearn"]]
        )
    lines += [common.markdown_table(header, rows), "", "![distance, damage and compute vs forget set](scaling.png)", ""]
    return "\n".join(lines)


def _axes(n: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4))
    return plt, fig, axes


PANELS = (
    ("strongest_auc_gap", "|dAUC| strongest attack to retrained"),
    ("kl_forget", "KL(P_retrained || P_model) on forget"),
    ("retain_damage", "retain damage (rel. NLL over original)"),
)


def plot_sequential(report: dict, path: str) -> None:
    """Distance and retain damage against the number of requests: sequential (solid), batched (dashed, squares),
    the original model (black)."""
    plt, fig, axes = _axes(len(PANELS))
    colors = {}
    for ax, (key, label) in zip(axes, PANELS):
        ks = list(range(1, REQUESTS + 1))
        ax.plot(
            ks, [report["references"][sequence_stage(k)]["original"][key] for k in ks], "k--", lw=1, label="original"
        )
        for c in report["sequential"]:
            color = colors.setdefault(c["method"], f"C{len(colors)}")
            ax.plot(ks, [s[key] for s in c["steps"]], "-o", color=color, label=f"{c['method']} sequential")
            points = sorted(
                [(1, c["steps"][0][key])]
                + [
                    (b["requests"], b[key])
                    for b in report["batched"]
                    if b["method"] == c["method"] and b["seed"] == c["seed"]
                ]
            )
            ax.plot(*zip(*points), "--s", color=color, mfc="none", label=f"{c['method']} batched")
        ax.set_xlabel("requests")
        ax.set_xticks(ks)
        ax.set_title(label, fontsize=9)
    axes[0].legend(fontsize=6)
    fig.suptitle("Successive requests: sequential (solid) vs batched (dashed) vs the retrained model", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_scaling(report: dict, path: str) -> None:
    """Distance, retain damage and compute ratio against the forget set's share of the training corpus."""
    panels = PANELS + (("retrain_over_unlearn", "retrain FLOPs / unlearn FLOPs"),)
    plt, fig, axes = _axes(len(panels))
    shares = [report["stages"][n]["share"] * 100 for n in report["order"]]
    for ax, (key, label) in zip(axes, panels):
        if key != "retrain_over_unlearn":
            ax.plot(
                shares,
                [report["references"][n]["original"][key] for n in report["order"]],
                "k--",
                lw=1,
                label="original",
            )
        for i, m in enumerate(dict.fromkeys(r["method"] for r in report["runs"])):
            rows = [r for r in report["runs"] if r["method"] == m and r["seed"] == 0]
            ax.plot([r["share"] * 100 for r in rows], [r[key] for r in rows], "-o", color=f"C{i}", label=m)
        ax.set_xscale("log")
        ax.set_xticks(shares)
        ax.set_xticklabels([f"{x:.1f}" for x in shares])
        ax.set_xlabel("forget set, % of training tokens")
        ax.set_title(label, fontsize=9)
        if key == "retrain_over_unlearn":
            ax.set_yscale("log")
    axes[0].legend(fontsize=6)
    fig.suptitle("Nested forget sets: one batched run each, against the model retrained without it", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
