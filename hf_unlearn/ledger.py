"""The request ledger: a model unlearned again continues its history, `unlearning_ledger.json` beside it.

Requests to forget arrive one after another; each run unlearns one from the model the previous run left. A run
reads the previous run's ledger (and manifest) from the folder or Hub repository its model was loaded from
(`read_history`), and writes the ledger with this request appended (`next_ledger`):

    {"ledger_version": 1,
     "original_unseen_nll": 3.3659, "original_unseen_nll_source": "measured by hf_unlearn before request 1",
     "requests": [{"request": 1, "date": ..., "method": ..., "forget_examples": ..., "manifest_sha256": ...}, ...],
     "manifests": [<the manifest of request 1>, ...]}

Each request holds its method, objectives, settings, counts, steps, stop kind, date and the SHA-256 of its manifest
(`hf_unlearn.manifest.manifest_digest`); each manifest holds the SHA-256 of the previous one
(`previous_manifest_sha256`), and the ledger keeps every manifest, so the chain can be checked from this one file
(`check_chain`). Nothing in it is data, a hash of data, or a number computed from a forget set's content.

The stopping target stays the one measured on the **original** model: the unseen set's NLL before any unlearning
(`original_unseen_nll`), measured by the first run and carried from run to run. A model whose first unlearning
was not made with hf_unlearn has no ledger: its user gives that number (`--original_unseen_nll`, or
`StoppingCriteria(target_nll=...)` with the trainer), measured with `hf-unlearn eval` on the original model.
"""

from __future__ import annotations

import copy
import datetime
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from .manifest import MANIFEST_FILE, manifest_digest

logger = logging.getLogger(__name__)

LEDGER_FILE = "unlearning_ledger.json"
LEDGER_VERSION = 1
MEASURED = "measured by hf_unlearn before request 1"
GIVEN = "given by the user (original_unseen_nll)"
# The settings of a request that the ledger (and the card) state.
REQUEST_SETTINGS = (
    "learning_rate",
    "lr_scheduler_type",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "forget_weight",
    "retain_weight",
    "seed",
)


@dataclass
class History:
    """What a model already went through: the previous run's ledger and manifest (None: a fresh model)."""

    ledger: dict[str, Any] | None = None
    manifest: dict[str, Any] | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    manifests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def next_request(self) -> int:
        return len(self.requests) + 1

    @property
    def previous_digest(self) -> str | None:
        return manifest_digest(self.manifest) if self.manifest is not None else None

    @property
    def original_unseen_nll(self) -> float | None:
        return (self.ledger or {}).get("original_unseen_nll")

    @property
    def original_unseen_nll_source(self) -> str | None:
        return (self.ledger or {}).get("original_unseen_nll_source")


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as handle:
            values = json.load(handle)
    except (OSError, ValueError):
        return None
    return values if isinstance(values, dict) else None


def _hub_file(repo_id: str, name: str, revision: str | None) -> str | None:
    """The local copy of `name` in a Hub model repository, or None (no such file, offline, no access)."""
    try:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(repo_id, name, revision=revision)
    except Exception:  # missing file, offline mode, no network, gated repository: no history to continue
        return None


def read_history(source: str | None, revision: str | None = None) -> History:
    """The history of the model at `source` (a local folder, or a Hub id whose repository is asked for the two
    files; None: no history): its ledger and manifest where present. A folder with a manifest but no ledger is one
    request (its manifest's)."""
    from .model_card import _is_hub_id

    if not source:
        return History()
    if os.path.isdir(source):
        ledger = _read_json(os.path.join(source, LEDGER_FILE))
        manifest = _read_json(os.path.join(source, MANIFEST_FILE))
    elif _is_hub_id(source):
        paths = {name: _hub_file(source, name, revision) for name in (LEDGER_FILE, MANIFEST_FILE)}
        ledger = _read_json(paths[LEDGER_FILE]) if paths[LEDGER_FILE] else None
        manifest = _read_json(paths[MANIFEST_FILE]) if paths[MANIFEST_FILE] else None
    else:
        return History()
    if ledger is None and manifest is None:
        return History()
    if ledger is not None:
        requests = list(ledger.get("requests") or [])
        manifests = list(ledger.get("manifests") or [])
    else:
        requests = [request_entry(manifest, manifest.get("request") or 1, manifest_digest(manifest))]
        manifests = [manifest]
    return History(ledger=ledger, manifest=manifest, requests=requests, manifests=manifests)


def request_entry(manifest: dict[str, Any], number: int, digest: str) -> dict[str, Any]:
    """One request of the ledger, from its run's manifest: date, method, settings, counts, steps, stop kind,
    version and the manifest's SHA-256."""
    config = manifest.get("config") or {}
    method = manifest.get("method") or {}
    stop = manifest.get("stop") or {}
    counts = manifest.get("counts") or {}
    return {
        "request": number,
        "date": manifest.get("created"),
        "method": method.get("name"),
        "forget_loss": method.get("forget_loss"),
        "retain_loss": method.get("retain_loss"),
        "settings": {name: config[name] for name in REQUEST_SETTINGS if name in config},
        "forget_examples": counts.get("forget"),
        "retain_examples": counts.get("retain"),
        "unseen_examples": counts.get("unseen"),
        "earlier_sets_checked": counts.get("earlier_sets"),
        "steps": stop.get("step"),
        "stop": stop.get("kind"),
        "hf_unlearn": (manifest.get("versions") or {}).get("hf_unlearn"),
        "manifest_sha256": digest,
    }


def next_ledger(
    history: History, manifest: dict[str, Any], original_unseen_nll: float | None, source: str | None
) -> dict[str, Any]:
    """The ledger after this run: the history's requests plus this one (`manifest`), and the original target
    (`original_unseen_nll`, `source` saying where it comes from: `MEASURED` or `GIVEN`)."""
    number = history.next_request
    return {
        "ledger_version": LEDGER_VERSION,
        "original_unseen_nll": original_unseen_nll,
        "original_unseen_nll_source": source if original_unseen_nll is not None else None,
        "requests": [*copy.deepcopy(history.requests), request_entry(manifest, number, manifest_digest(manifest))],
        "manifests": [*copy.deepcopy(history.manifests), manifest],
    }


def original_target(history: History, given: float | None, measured: float | None) -> tuple[float | None, str | None]:
    """The original model's unseen NLL and where it comes from: `given` by the user (a warning when the history
    holds another), else the history's, else `measured` at the start of this run when it is the first request."""
    if given is not None:
        kept = history.original_unseen_nll
        if kept is not None and kept != given:
            logger.warning(
                "original_unseen_nll %s replaces the ledger's %s (%s).", given, kept, history.original_unseen_nll_source
            )
        return given, GIVEN
    if history.original_unseen_nll is not None:
        return history.original_unseen_nll, history.original_unseen_nll_source
    if history.next_request == 1 and measured is not None:
        return measured, MEASURED
    return None, None


def check_chain(ledger: dict[str, Any]) -> list[str]:
    """The breaks of a ledger's chain (empty when whole): each request's `manifest_sha256` is the digest of its
    manifest, and each manifest's `previous_manifest_sha256` the digest of the one before."""
    problems = []
    requests, manifests = ledger.get("requests") or [], ledger.get("manifests") or []
    if len(requests) != len(manifests):
        problems.append(f"{len(requests)} requests but {len(manifests)} manifests")
    previous = None
    for index, (request, manifest) in enumerate(zip(requests, manifests), start=1):
        digest = manifest_digest(manifest)
        if request.get("manifest_sha256") != digest:
            problems.append(f"request {index}: its manifest_sha256 is not its manifest's digest")
        if index > 1 and manifest.get("previous_manifest_sha256") != previous:
            problems.append(f"request {index}: previous_manifest_sha256 is not request {index - 1}'s digest")
        previous = digest
    return problems


def utc_date(timestamp: str | None) -> str:
    """The date part of an ISO timestamp ("2026-12-03"), "–" without one."""
    if not timestamp:
        return "–"
    try:
        return datetime.datetime.fromisoformat(timestamp).date().isoformat()
    except ValueError:
        return timestamp[:10]


__all__ = ["LEDGER_FILE", "History", "check_chain", "next_ledger", "original_target", "read_history"]
