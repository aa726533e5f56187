#!/usr/bin/env bash
# One benchmark run on a lent GPU machine (the `device` tool), prepared to fit one call:
# install the carried wheels (.whl: diffusers, PyAV, pydantic, SQLAlchemy; the machine has torch), then
# bench/gpu.py --mode all. Results and the log land in $OUT (or bench/results without it). Extra arguments go to
# bench/gpu.py; `PYTHON=.venv/bin/python bench/gpu_device.sh --tiny` checks the script on a CPU first.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
out=${OUT:-bench/results}
if [ -z "${PYTHON:-}" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD/src" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
"$PY" bench/gpu.py --mode all --requests 16 --compare-overlap 6 --out "$out/gpu.json" "$@" 2>&1 | tee "$out/gpu.log"
