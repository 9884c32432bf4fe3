#!/usr/bin/env bash
# GPU readiness check (issue #15), for a machine with one CUDA GPU; about 5-8 minutes.
#
#   1. the equivalence suite (same weights as torch.nn.RNN/LSTM/GRU -> same outputs and
#      gradients) and the float64 gradcheck suite of the hand-written BPTT, on CUDA
#      (RNNKIT_TEST_DEVICE=cuda, read by the `device` fixture of tests/conftest.py);
#   2. `rnnkit bench --device cuda` on the grid's four shapes against torch.nn (cuDNN):
#      rnn, lstm, gru, lstm-proj (the cells with a torch.nn twin), 3 rounds, generation
#      at batch 1 and 64 -> OUT_DIR/BENCHMARKS-cuda.md and .json.
#
# Usage, from the repository root:   benchmarks/gpu_check.sh [OUT_DIR]   (default: gpu_check)
# It fails at once, saying why, without a CUDA GPU or with a CPU-only torch. Each stage has
# its own time limit so that the whole stays under 8 minutes; a bench cut short still
# writes what it measured (marked "Partial run"). Exit status: non-zero if a stage failed.
set -uo pipefail

out="${1:-gpu_check}"
if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "gpu_check: nvidia-smi not found: this script needs a machine with a CUDA GPU" >&2
    exit 2
fi
if ! nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; then
    echo "gpu_check: nvidia-smi found no usable GPU" >&2
    exit 2
fi
python - <<'PY' || exit 2
import sys

import torch

if not torch.cuda.is_available():
    sys.exit(f"gpu_check: torch {torch.__version__} sees no CUDA device (torch.cuda.is_available() is False; "
             "a CPU-only torch?)")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
      f"{torch.cuda.get_device_name()}")
PY

mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0
start=$(date +%s)

echo "== 1/2 equivalence and gradcheck suites on CUDA"
# the tests that take the `device` fixture run on CUDA; the few others of the two files on the CPU
RNNKIT_TEST_DEVICE=cuda timeout 270 python -m pytest -q -p no:cacheprovider \
    tests/test_layers_equivalence.py tests/test_bptt_gradcheck.py --junitxml="$out/tests-cuda.xml" 2>&1 \
    | tee "$out/tests-cuda.log" | tail -n 25
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ]; then
    echo "gpu_check: the CUDA test suites failed or timed out (exit $rc; $out/tests-cuda.log)" >&2
    status=1
fi

echo "== 2/2 rnnkit bench --device cuda against cuDNN"
timeout 240 python -m rnnkit bench --device cuda --cells rnn lstm gru lstm-proj --rounds 3 --sample-chars 100 \
    --no-scan --out "$out/BENCHMARKS-cuda.md" --json "$out/BENCHMARKS-cuda.json" 2>&1 | tee "$out/bench-cuda.log"
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ]; then
    echo "gpu_check: the bench failed or timed out (exit $rc; what it measured is in $out/BENCHMARKS-cuda.md)" >&2
    status=1
fi

echo "== done in $(( $(date +%s) - start )) s: $out/ (tests-cuda.log, BENCHMARKS-cuda.md)"
exit $status
