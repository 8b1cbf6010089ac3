"""Where vLLM's W8A8 perplexity parts from quantwise's own evaluation of the same checkpoint: the
checkpoint evaluated in bf16 (vLLM's dtype) with activation and weight treatments an engine might
apply, on the tokens and chunks `interop_report.py --engines vllm` scores (transformers tokens,
chunks of 512, second halves scored).

    python3 benchmarks/w8a8_vllm_gap.py runs/smol-sq [--chunks 8]

Rows: quantwise's per-token activations (what the export declares); the same with float32 scales;
per-tensor activations; weights only; and 7-bit weights with per-token activations — what an int8
GEMM on a CPU without VNNI computes when it halves the weights to keep u8 x s8 pair sums inside
int16 (the saturation workaround OpenVINO documents for AVX2 / AVX-512 without VNNI:
https://docs.openvino.ai/latest/pot_saturation_issue.html).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from interop_report import _score
from transformers import AutoTokenizer

import quantwise
from quantwise.cache import cache_dir
from quantwise.runtime import qlinear

_PER_TOKEN = qlinear.quantize_activations


def _per_token_fp32(x, spec, threshold):
    rows = x.float().reshape(-1, x.shape[-1])
    scale = rows.abs().amax(-1, keepdim=True).clamp(min=1e-12) / 127
    return (torch.round(rows / scale).clamp(-127, 127) * scale).reshape(x.shape).to(x.dtype)


def _per_tensor(x, spec, threshold):
    scale = x.float().abs().amax().clamp(min=1e-12) / 127
    return (torch.round(x.float() / scale).clamp(-127, 127) * scale).to(x.dtype)


def _seven_bit_weights(model):
    for module in model.modules():
        if isinstance(module, qlinear.QuantizedLinear) and module.act_spec is not None:
            scale = module.weight_q.scales.float()
            codes = torch.round(module.dense_weight().float() / scale)
            module._dense, module._cast = torch.round(codes / 2) * 2 * scale, None  # codes halved, rounded
    return model


VARIANTS = {
    "per-token activations (quantwise)": (_PER_TOKEN, None),
    "per-token, float32 scales": (_per_token_fp32, None),
    "per-tensor activations": (_per_tensor, None),
    "weights only": (lambda x, spec, threshold: x, None),
    "7-bit weights, per-token activations": (_PER_TOKEN, _seven_bit_weights),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--text", default=str(cache_dir("text") / "austen" / "prideprejudice.txt"))
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--chunks", type=int, default=8)
    args = parser.parse_args()
    text = Path(args.text).read_text(encoding="utf-8")
    ids = AutoTokenizer.from_pretrained(args.checkpoint)(text, return_tensors="pt")["input_ids"][0]
    print("| treatment | bf16 perplexity |\n|---|---|")
    for name, (activations, weights) in VARIANTS.items():
        qlinear.quantize_activations = activations
        model = quantwise.load(args.checkpoint, kernels=False, dtype=torch.bfloat16)
        ppl, _ = _score(weights(model) if weights else model, ids, args.ctx, args.chunks)
        print(f"| {name} | {ppl:.4f} |", flush=True)
    qlinear.quantize_activations = _PER_TOKEN


if __name__ == "__main__":
    main()
