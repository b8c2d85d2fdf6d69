#!/usr/bin/env bash
# The GPU check in one command, for a borrowed H100/H200 with no network (see benchmarks/gpu_check.py):
#
#   bash benchmarks/gpu_check.sh [extra gpu_check.py options, e.g. --layers 24]
#
# Run it from the repository root with the wheels in .whl/ next to it; allow about 9 minutes.
# It installs the wheels carried in .whl/ into /tmp/site, checks the imports, then runs the check under a hard time
# limit (GPU_CHECK_TIMEOUT, default 400 s) and leaves in $OUT:
#   gpu_check.json  peak GPU memory, tokens/s, step times, setup times (rewritten after every step)
#   gpu_check.log   everything printed
#
# The GPU machine's python3 (3.12) has torch 2.11, transformers 5.17, accelerate 1.15, ninja, nvcc, but no
# deepspeed, trl or datasets, and no network. Build the wheels first, here (about 21 MB, ignored by git):
#
#   bash benchmarks/gpu_check.sh wheels
set -uo pipefail
cd "$(dirname "$0")/.."

# Pinned to the versions this repository is tested with; the rest of their requirements are on the GPU machine.
WHEELS="transformers==5.24.0 trl==1.16.0 datasets==5.2.0 hjson==3.1.0 pydantic==2.14.4 pydantic-core==2.50.5
  annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0 dill==0.4.1 multiprocess==0.70.19
  regex==2026.11.19"
if [ "${1:-}" = wheels ]; then
  mkdir -p .whl
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $WHEELS
  # deepspeed ships as an sdist: a pure-Python wheel (its C++/CUDA ops compile at run time, with ninja).
  "${PYTHON:-.venv/bin/python}" -m pip wheel -q --no-deps --no-build-isolation deepspeed==0.19.8 -w .whl
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  ls -la .whl && du -sh .whl
  exit 0
fi
OUT=${OUT:-$PWD/outputs/gpu_check}
LIMIT=${GPU_CHECK_TIMEOUT:-400}
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log

{
  echo "== $(date -u) on $(hostname): $(nproc) cores"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  free -g | head -2
} 2>&1 | tee "$LOG"

ls .whl/*.whl >/dev/null 2>&1 || { echo "no wheels in .whl/: carry .whl (see benchmarks/gpu_check.sh)" | tee -a "$LOG"; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl 2>&1 \
  | grep -v "Running pip as the 'root' user" | tee -a "$LOG"
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore::FutureWarning TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
export DS_SKIP_CUDA_CHECK=1 MAX_JOBS=${MAX_JOBS:-16} TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-/tmp/torch_extensions}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}  # DeepSpeedCPUAdam's threads: all cores (one process)

python3 - <<'PY' 2>&1 | tee -a "$LOG"
import importlib
versions = {}
for name in ("torch", "transformers", "accelerate", "deepspeed", "trl", "datasets", "pyarrow", "huggingface_hub",
             "tokenizers", "pydantic"):
    versions[name] = getattr(importlib.import_module(name), "__version__", "?")
import torch
assert torch.cuda.is_available(), "no CUDA device visible to torch"
print("preflight: imports ok", versions)
PY
[ "${PIPESTATUS[0]}" = 0 ] || { echo "== preflight failed: an import or the GPU is missing (see above)" | tee -a "$LOG"; exit 3; }

timeout --signal=TERM --kill-after=30 "$LIMIT" \
  python3 -m torch.distributed.run --nproc_per_node 1 benchmarks/gpu_check.py --out "$OUT/gpu_check.json" "$@" 2>&1 | tee -a "$LOG"
status=${PIPESTATUS[0]}
echo "== exit status $status (124: stopped at the ${LIMIT} s limit; gpu_check.json holds the steps measured until then)" | tee -a "$LOG"
exit "$status"
