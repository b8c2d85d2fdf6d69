"""LoRA / PEFT helpers."""

from __future__ import annotations

import os


def merge_and_save(trainer, output_dir: str) -> None:
    """Merge the trained adapter into the base weights and save a plain model (+ tokenizer and model card).

    The trainer's model is left unmerged, so training or evaluation can go on. Not available under ZeRO-3
    (gather the weights with `trainer.save_model()` first and merge offline).
    """
    from peft import PeftModel

    model = trainer.accelerator.unwrap_model(trainer.model)
    if not isinstance(model, PeftModel):
        raise ValueError(f"merge_and_save needs a PEFT model, got {type(model).__name__}; use trainer.save_model().")
    if trainer.is_deepspeed_enabled and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3:
        raise ValueError("merge_and_save cannot merge ZeRO-3 partitioned weights; save the adapter and merge offline.")
    if trainer.args.should_save:
        model.merge_adapter()
        try:
            base = model.get_base_model()
            # The base still holds LoRA layers: keep the merged base weights under their original names.
            merged = {
                name.replace(".base_layer", ""): tensor
                for name, tensor in base.state_dict().items()
                if "lora_" not in name
            }
            base.save_pretrained(output_dir, state_dict=merged)
        finally:
            model.unmerge_adapter()
        if trainer.processing_class is not None:
            trainer.processing_class.save_pretrained(output_dir)
        trainer.write_model_card(output_dir)
    trainer.accelerator.wait_for_everyone()
    if not os.path.isdir(output_dir) and trainer.args.should_save:
        raise RuntimeError(f"Nothing was saved to {output_dir}.")
