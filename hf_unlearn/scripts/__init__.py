"""The application: command-line scripts built on the hf_unlearn library (as `trl.scripts` is on trl).

- `hf_unlearn.scripts.unlearn`: `hf-unlearn train`, `python -m hf_unlearn.scripts.unlearn`,
  `accelerate launch -m hf_unlearn.scripts.unlearn` (and `recipes/unlearn.py`, a shim).
- `hf_unlearn.scripts.evaluate`: `hf-unlearn eval` (and `recipes/evaluate.py`).
- `hf_unlearn.scripts.args`: `ScriptArguments` and `parse_args` (flat YAML config + command-line overrides).
- `hf_unlearn.scripts.demo`: the embedded default job (SmolLM2-135M from PyPI, stdlib data, its report).
- `embedded_default.yaml`: the default job's config, shipped as package data.

Nothing in the library (`hf_unlearn.*` outside this package) imports from here.
"""
