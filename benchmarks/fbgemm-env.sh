#!/usr/bin/env bash
# An environment where FBGEMM's CPU embedding tables run beside this package, so that
# `python -m benchmarks.sparse` times both in one process: torch 2.13.0 with
# fbgemm-gpu-cpu 1.8.0 (1.9.0 does not load with torch 2.13), and this package built with
# the roofline probe (-DADAGRAD_PROBE=ON). FBGEMM is no dependency of the package; the
# benchmark skips it, saying why, where it is not installed or does not load.
#
#   bash benchmarks/fbgemm-env.sh [VENV]        # default: .venv-fbgemm
#   VENV/bin/python -m benchmarks.sparse        # from the repository root
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${1:-.venv-fbgemm}
python3 -m venv "$venv"
"$venv/bin/python" -m pip install "torch==2.13.0" "fbgemm-gpu-cpu==1.8.0"
CMAKE_ARGS="-DADAGRAD_PROBE=ON" "$venv/bin/python" -m pip install .
"$venv/bin/python" -c "import fbgemm_gpu, torch, adagrad_native._core as c; \
assert hasattr(c, 'RowsProbe'); print('torch', torch.__version__, '+ FBGEMM + adagrad_native: ready')"
