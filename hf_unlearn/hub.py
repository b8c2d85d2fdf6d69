"""Saving, model cards and the Hugging Face Hub for unlearning trainers (a mixin of `UnlearningTrainer`).

Everything that leaves the training process as files lives here: what `save_model` writes beside the weights,
the model card, and what `push_to_hub` uploads.
"""

from __future__ import annotations

import os


class HubMixin:
    """`Trainer` overrides for saving and pushing; mixed into `UnlearningTrainer` before `transformers.Trainer`."""

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """Save as `Trainer` does, plus a model card (README.md) describing the unlearning."""
        super()._save(output_dir, state_dict)
        self.write_model_card(output_dir or self.args.output_dir)

    def write_model_card(self, output_dir: str, model_name: str | None = None) -> None:
        """Write README.md (see `hf_unlearn.model_card`) into `output_dir` on the main process."""
        if not self.args.should_save:
            return
        from . import __version__
        from .model_card import CARD_HYPERPARAMETERS, build_model_card, summarize_dataset
        from .reference import policy_checkpoint

        policy = self.accelerator.unwrap_model(self.model)
        base = getattr(getattr(policy, "peft_config", {}).get("default"), "base_model_name_or_path", None)
        values = {name: getattr(self.args, name) for name in CARD_HYPERPARAMETERS if hasattr(self.args, name)}
        card = build_model_card(
            method=self.method_name,
            paper_name=self.paper_name or self.method_name,
            base_model=base or policy_checkpoint(policy),
            hyperparameters=values,
            forget=summarize_dataset(self.forget_dataset),
            retain=summarize_dataset(self.retain_dataset) if self.retain_dataset is not None else None,
            results=self.evaluation_results,
            version=__version__,
            model_name=model_name,
        )
        os.makedirs(output_dir, exist_ok=True)
        card.save(os.path.join(output_dir, "README.md"))

    def create_model_card(self, model_name: str | None = None, **kwargs) -> None:
        """Called by `push_to_hub`: the unlearning card instead of the generic Trainer card."""
        self.write_model_card(self.args.output_dir, model_name=model_name)

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
