"""Saving, model cards and the Hugging Face Hub for unlearning trainers (a mixin of `UnlearningTrainer`).

Everything that leaves the training process as files lives here: what `save_model` writes beside the weights,
the model card, and what `push_to_hub` uploads.

What is uploaded, and when (the forget set must not travel with the model):

- `push_to_hub()` uploads exactly the unlearned model: weights, config(s), generation config, tokenizer files,
  the model card, the run manifest and the request ledger (`hf_unlearn.manifest`, `hf_unlearn.ledger`), staged in
  a fresh folder (`save_model(..., _internal_call=True)` into it, plus the card) and uploaded in one commit. Never
  the output folder as it stands: no TensorBoard runs, no `best/`, no checkpoints, no `training_args.bin`, no stale
  files of earlier runs.
- `save_model()` with `push_to_hub=True` pushes once, and only when it saves the final model into `output_dir`
  (as `Trainer` does); saving anywhere else (e.g. `<output_dir>/best`) never pushes.
- Intermediate checkpoints are never pushed, whatever `hub_strategy` says.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile

logger = logging.getLogger(__name__)

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """The disk filled up while saving; the partial save was removed (`removed_if_disk_full`)."""


def is_disk_full(error: BaseException, folder: str) -> bool:
    """Whether `error` (or what caused it) is a full disk or quota: ENOSPC / EDQUOT, their message (torch and
    safetensors wrap the OSError), or under 1 MiB left where `folder` lies."""
    seen = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in DISK_FULL_ERRNOS:
            return True
        if any(os.strerror(code) in str(seen) for code in DISK_FULL_ERRNOS):
            return True
        seen = seen.__cause__ or seen.__context__
    existing = folder
    while existing and not os.path.isdir(existing):
        existing = os.path.dirname(existing)
    try:
        return shutil.disk_usage(existing or ".").free < 2**20
    except OSError:
        return False


def _entries(folder: str) -> dict[str, tuple[int, int]]:
    out = {}
    for entry in os.scandir(folder):
        info = entry.stat(follow_symlinks=False)
        out[entry.name] = (info.st_mtime_ns, info.st_size)
    return out


@contextlib.contextmanager
def removed_if_disk_full(folder: str):
    """Run a save into `folder`; when the disk fills up, remove what the save wrote (the whole folder when the save
    created it, else the files it added or changed) and raise `DiskFullError` naming the folder, so that no
    half-written model or checkpoint is left to be taken as complete."""
    existed = os.path.isdir(folder)
    before = _entries(folder) if existed else {}
    try:
        yield
    except BaseException as error:
        if not isinstance(error, DiskFullError) and not is_disk_full(error, folder):
            raise
        if not existed:
            shutil.rmtree(folder, ignore_errors=True)
        elif os.path.isdir(folder):
            for name, stamp in _entries(folder).items():  # files only: folders beside it (checkpoints) stay
                path = os.path.join(folder, name)
                if before.get(name) != stamp and not os.path.isdir(path):
                    os.remove(path)
        if isinstance(error, DiskFullError):
            raise
        raise DiskFullError(
            f"disk full while saving to {folder!r}: the partial save was removed; free space on that disk (or choose "
            "another --output_dir) and run again."
        ) from error


# Files of a saved model that the push never uploads (a pickled TrainingArguments says nothing about the model).
NOT_UPLOADED = ("training_args.bin",)


class HubMixin:
    """`Trainer` overrides for saving and pushing; mixed into `UnlearningTrainer` before `transformers.Trainer`."""

    def __init__(self, *args, train_dataset=None, **kwargs):
        # Raw forget text is tokenised by the trainer at `max_length`, which the card then states.
        self._forget_tokenised_at_max_length = _is_raw(train_dataset)
        # What the manifest adds to the trainer's own view of the run (the recipe fills it; `hf_unlearn.manifest`).
        self.manifest_context: dict = {}
        self._run_history = None
        super().__init__(*args, train_dataset=train_dataset, **kwargs)
        if self.model is not None and os.path.isdir(self._history_source()[0] or ""):
            # A local folder is read before any save can write into it; a Hub repository at the first save.
            self.run_history()

    def _history_source(self) -> tuple[str | None, str | None]:
        """(folder or Hub id, revision) the model being unlearned was loaded from."""
        from .reference import policy_checkpoint

        policy = self.accelerator.unwrap_model(self.model)
        return policy_checkpoint(policy), getattr(getattr(policy, "config", None), "_commit_hash", None)

    def run_history(self):
        """The request history of the model being unlearned (`hf_unlearn.ledger.read_history` of the folder or Hub
        repository it was loaded from), read once."""
        if self._run_history is None:
            from .ledger import read_history

            self._run_history = read_history(*self._history_source())
        return self._run_history

    def set_run_history(self, history) -> None:
        """Use `history` (a `hf_unlearn.ledger.History`) as the model's request history."""
        self._run_history = history

    def write_run_records(self, output_dir: str) -> dict | None:
        """Write the run manifest and the request ledger into `output_dir` (main process); returns the ledger.

        The original model's unseen NLL (the stopping target) is the user's (`manifest_context["original_unseen_nll"]`),
        else the history's, else, on a first request, the one measured at the start of this run (the recipe's
        `manifest_context["measured_unseen_nll"]`, or the start evaluation of an `UnlearningEvalCallback` that
        measured its own target)."""
        if not self.args.should_save:
            return None
        from .ledger import LEDGER_FILE, next_ledger, original_target
        from .manifest import MANIFEST_FILE, build_manifest, eval_callback, write_json

        history = self.run_history()
        manifest = build_manifest(self, history)
        context = self.manifest_context
        measured = context.get("measured_unseen_nll")
        callback = eval_callback(self)
        if measured is None and callback is not None and callback.start is not None:
            if callback.criteria is None or callback.criteria.target_nll is None:
                measured = callback.start.nll.get("approximate")
        target, source = original_target(history, context.get("original_unseen_nll"), measured)
        ledger = next_ledger(history, manifest, target, source)
        os.makedirs(output_dir, exist_ok=True)
        write_json(os.path.join(output_dir, MANIFEST_FILE), manifest)
        write_json(os.path.join(output_dir, LEDGER_FILE), ledger)
        self._ledger = ledger
        return ledger

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save as `Trainer` does. With `push_to_hub=True`, push once (see `push_to_hub`) when the final model is
        saved into `args.output_dir` by a user call; a save elsewhere (e.g. `best/`) or an internal save never
        pushes."""
        with removed_if_disk_full(output_dir or self.args.output_dir):
            super().save_model(output_dir, _internal_call=True)
        if not self.args.push_to_hub or _internal_call:
            return
        if output_dir is None or os.path.abspath(output_dir) == os.path.abspath(self.args.output_dir):
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)
        else:
            logger.info("Saved to %s without pushing: only the final model in output_dir is pushed.", output_dir)

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        **kwargs,
    ):
        """Upload the unlearned model, its tokenizer, config(s), generation config and model card, in one commit.

        The files are staged in a fresh temporary folder (removed afterwards, also on failure) by
        `save_model(staging, _internal_call=True)` plus the card, so nothing else from `output_dir` (TensorBoard
        runs, `best/`, checkpoints, files of earlier runs) can be uploaded. Collective like `save_model` (every
        process calls it; process zero uploads). `kwargs` are those of `create_model_card` (`license`, `tags`,
        `language`, `finetuned_from`, `dataset`, `dataset_tags`, ...), kept for later saves; `model_name` names
        the card's title.
        """
        from huggingface_hub import HfApi

        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        model_name = kwargs.pop("model_name", None)
        self._remember_card_metadata(kwargs)
        if model_name is None:
            model_name = (self.args.hub_model_id or os.path.basename(os.path.normpath(self.args.output_dir))).split(
                "/"
            )[-1]
        token = token if token is not None else self.args.hub_token
        if getattr(self, "hub_model_id", None) is None:
            self.init_hf_repo(token=token, private=private)
        os.makedirs(self.args.output_dir, exist_ok=True)
        # Staged beside the output (same disk, as large as the model); "_"-prefixed, and listed by `hf-unlearn
        # traces` should a killed process leave it behind.
        with tempfile.TemporaryDirectory(prefix="_push-staging-", dir=self.args.output_dir) as staging:
            self.save_model(staging, _internal_call=True)  # collective under ZeRO-3 / FSDP
            if not self.is_world_process_zero():
                return None
            self.write_model_card(staging, model_name=model_name)
            for name in NOT_UPLOADED:
                path = os.path.join(staging, name)
                if os.path.exists(path):
                    os.remove(path)
            self._finish_current_push()
            return HfApi().upload_folder(
                repo_id=self.hub_model_id,
                folder_path=staging,
                commit_message=commit_message,
                token=token,
                revision=revision if revision is not None else self.args.hub_revision,
            )

    def _save_checkpoint(self, model, trial) -> None:
        """Save a checkpoint as `Trainer` does; on a full disk the partial `checkpoint-N` is removed
        (`removed_if_disk_full`), so a resume never takes it as complete."""
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        with removed_if_disk_full(folder):
            super()._save_checkpoint(model, trial)

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """Do nothing: intermediate checkpoints are never pushed (whatever `hub_strategy` says).

        A checkpoint is a partly unlearned model (it can still reproduce the forget set) with its optimizer state;
        `Trainer` would upload it, and the whole output folder, into the repository's history at every save. Only
        the final model is pushed, once, by `push_to_hub` / `save_model`.
        """
        return None

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """Save as `Trainer` does, plus the run manifest, the request ledger and a model card (README.md) describing
        the unlearning."""
        super()._save(output_dir, state_dict)
        self.write_run_records(output_dir or self.args.output_dir)
        self.write_model_card(output_dir or self.args.output_dir)

    # Metadata of `create_model_card` / `push_to_hub` that the card keeps (plain `Trainer` takes the same).
    CARD_METADATA = (
        "language",
        "license",
        "tags",
        "finetuned_from",
        "tasks",
        "dataset_tags",
        "dataset",
        "dataset_args",
    )

    def _remember_card_metadata(self, kwargs: dict) -> None:
        """Keep the card metadata given to `create_model_card` / `push_to_hub`, so every later card has it too."""
        stored = self.__dict__.setdefault("_card_metadata", {})
        for name in self.CARD_METADATA:
            if kwargs.get(name) is not None:
                stored[name] = kwargs[name]

    def evaluate(self, *args, **kwargs):
        """`Trainer.evaluate`, its numbers kept for the model card (column `evaluate`, or the metric prefix)."""
        metrics = super().evaluate(*args, **kwargs)
        prefix = kwargs.get("metric_key_prefix", args[2] if len(args) > 2 else "eval")
        dataset = kwargs.get("eval_dataset", args[0] if args else None)
        if not self._is_forget_data(dataset if dataset is not None else self.eval_dataset):
            self.__dict__.setdefault("_evaluate_metrics", {})["evaluate" if prefix == "eval" else prefix] = dict(
                metrics or {}
            )
        return metrics

    def _is_forget_data(self, dataset) -> bool:
        """Whether an evaluation dataset is (a split holding) the forget set: its metrics never reach the card."""
        forget = [self.train_dataset, getattr(self, "forget_dataset", None)]
        datasets = dataset.values() if isinstance(dataset, dict) else [dataset]
        return any(d is not None and any(d is f for f in forget if f is not None) for d in datasets)

    def write_model_card(self, output_dir: str, model_name: str | None = None, **metadata) -> None:
        """Write README.md (see `hf_unlearn.model_card`) into `output_dir` on the main process.

        `metadata`: as `create_model_card` takes it (added to what earlier calls gave). A PEFT model's card keeps
        peft's metadata (`library_name: peft`, its tags, the PEFT version; the base model when it is a Hub id).
        """
        if not self.args.should_save:
            return
        from . import __version__
        from .model_card import (
            _is_hub_id,
            build_model_card,
            card_hyperparameters,
            method_description,
            numeric_results,
            summarize_dataset,
        )
        from .objectives import NO_RETAIN
        from .reference import policy_checkpoint

        self._remember_card_metadata(metadata)
        given = dict(self.__dict__.get("_card_metadata", {}))
        policy = self.accelerator.unwrap_model(self.model)
        is_peft = hasattr(policy, "peft_config") and hasattr(policy, "get_base_model")
        base = getattr(getattr(policy, "peft_config", {}).get("default"), "base_model_name_or_path", None)
        tags = list(getattr(policy, "model_tags", None) or [])
        tags += [given["tags"]] if isinstance(given.get("tags"), str) else list(given.get("tags") or [])
        versions = None
        if is_peft:
            import peft

            try:
                tags += list(policy._get_peft_specific_model_tags())
            except Exception:  # an older / newer peft without it: the library name still says peft
                pass
            versions = {"PEFT": peft.__version__}
        forget = summarize_dataset(self.forget_dataset)
        # Methods that ignore retain data keep `retain_dataset` None, so no unused retain set is listed.
        retain = summarize_dataset(self.retain_dataset) if self.retain_dataset is not None else None
        results = dict(self.evaluation_results or {})
        for stage, metrics in self.__dict__.get("_evaluate_metrics", {}).items():  # none of the forget set
            numbers = numeric_results(metrics)
            if numbers:
                results.setdefault(stage, numbers)
        results = {stage: numeric_results(values) for stage, values in results.items()}
        datasets = [*_listed(given.get("dataset_tags")), *_listed(given.get("dataset"))]
        card = build_model_card(
            method=self.method_name,
            paper_name=method_description(
                type(self),
                self.forget_objective.name,
                self.retain_objective.name if self.retain_objective else NO_RETAIN,
            ),
            # The first Hub id among: what the user named, the adapter's base, the checkpoint loaded from.
            base_model=next(
                (
                    name
                    for name in (given.get("finetuned_from"), base, policy_checkpoint(policy))
                    if isinstance(name, str) and _is_hub_id(name)
                ),
                None,
            ),
            hyperparameters=card_hyperparameters(
                self.unlearning_args,
                retain,
                tokenised_at_max_length=self.__dict__.get("_forget_tokenised_at_max_length", False),
            ),
            forget=forget,
            retain=retain,
            results={stage: values for stage, values in results.items() if values},
            version=__version__,
            model_name=model_name,
            license=given.get("license"),
            tags=tags,
            language=given.get("language"),
            datasets=list(dict.fromkeys(datasets)),
            library_name="peft" if is_peft else "transformers",
            framework_versions=versions,
            ledger=self.__dict__.get("_ledger"),
        )
        os.makedirs(output_dir, exist_ok=True)
        card.save(os.path.join(output_dir, "README.md"))

    def create_model_card(self, model_name: str | None = None, **kwargs) -> None:
        """The unlearning card instead of the generic Trainer card, into `output_dir`. Takes what
        `Trainer.create_model_card` takes (`language`, `license`, `tags`, `finetuned_from`, `dataset_tags`,
        `dataset`, ...); `finetuned_from` is written only when it is a Hub id (never a local path)."""
        self.write_model_card(self.args.output_dir, model_name=model_name, **kwargs)

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """Create the Hub repository, failing early with the fix when no token is set or the Hub is unreachable."""
        from huggingface_hub import constants, get_token

        token = token if token is not None else self.args.hub_token
        if token is None and get_token() is None:
            raise ValueError(
                "push_to_hub needs a Hugging Face token with write access: run `hf auth login` or set HF_TOKEN "
                "(or pass hub_token=). To train without pushing, set push_to_hub=False."
            )
        try:
            super().init_hf_repo(token=token, private=private)
        except Exception as error:  # offline mode, DNS, connection and HTTP errors all land here
            raise RuntimeError(
                f"Could not reach the Hugging Face Hub at {constants.ENDPOINT} to create the repository "
                f"({type(error).__name__}: {error}). Check the network (HF_HUB_OFFLINE={constants.HF_HUB_OFFLINE}) "
                "or train with push_to_hub=False and upload the saved folder later with "
                "`hf upload <repo_id> <output_dir>`."
            ) from error


def _is_raw(dataset) -> bool:
    """Raw text (no `input_ids`), which the trainer tokenises at `max_length`."""
    columns = getattr(dataset, "column_names", None)
    if columns is None and isinstance(dataset, (list, tuple)) and dataset:
        columns = list(dataset[0])
    return columns is not None and "input_ids" not in columns


def _listed(value) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(item) for item in value]
