#!/usr/bin/env bash
# The prepared device check for a session lent a GPU: CUDA kernel tests against the CPU reference,
# then `quantwise bench --device cuda` on a tiny model and on 2 blocks of Llama-3-8B's shapes
# (random weights built there: the device machine reaches no model hub). Uses the image's own
# torch and transformers; nothing is installed. Results land in $OUT (or /tmp/gpu-check).
#   device run: bash scripts/gpu_check.sh        (a few minutes on an H100)
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-/tmp/gpu-check}" models=/tmp/gpu-check-models
mkdir -p "$out" "$models"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, \
'cuda', torch.cuda.is_available())" | tee -a "$out/gpu.txt"
# Issue 10's vLLM checks (W4A16, W8A8, FP8 exports) need vLLM's GPU kernels: record whether the image has it
python3 -c "import vllm; print('vllm', vllm.__version__)" 2>&1 | tail -1 | tee -a "$out/gpu.txt"
python3 -m pytest tests/gpu tests/methods/test_kernels.py -o addopts="" -p no:cacheprovider -q 2>&1 | tee "$out/tests.txt"
python3 -c "import sys; sys.path.insert(0, 'tests'); from pathlib import Path; from tiny_models import make_tiny_model; \
make_tiny_model(Path('$models/tiny'))"
python3 -m quantwise.cli data synth llama-3-8b --layers 2 --overwrite --out "$models/llama-3-8b-2blocks"
for model in tiny llama-3-8b-2blocks; do
  python3 -m quantwise.cli bench "$models/$model" --device cuda --formats bf16,int4,int4:unfused,int8 \
    --batch 1,8,32 2>&1 | tee "$out/bench-$model.txt"
done
