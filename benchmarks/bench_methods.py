"""RTN vs GPTQ vs AWQ on SmolLM2-135M with Austen calibration: wall time, peak RSS and held-out
perplexity next to the fp32 reference. Run `quantwise data fetch` first.

    python3 benchmarks/bench_methods.py [--samples 32] [--seq-len 512] [--eval-tokens 20000]

Each quantization runs as its own `quantwise quantize` process so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import quantwise
from quantwise.cache import cache_dir
from quantwise.evaluation.perplexity import perplexity
from quantwise.models import param_breakdown, resolve_arch

RUNS = [("rtn", "int4-g128"), ("gptq", "int4-g128"), ("awq", "int4-g128"),
        ("rtn", "int3-g128"), ("gptq", "int3-g128"), ("awq", "int3-g128")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--eval-tokens", type=int, default=20000)
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--stride", type=int, default=512)
    parser.add_argument("--runs", default=",".join(f"{m}:{f}" for m, f in RUNS))
    args = parser.parse_args()
    model_dir = cache_dir("models") / "smollm2-135m"
    calib = cache_dir("text") / "austen" / "emma.txt"
    held_out = cache_dir("text") / "austen" / "prideprejudice.txt"
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    ids = tokenizer(held_out.read_text(), return_tensors="pt")["input_ids"][0][: args.eval_tokens]

    def ppl(model) -> float:
        return perplexity(model, ids, args.window, args.stride).perplexity

    reference = ppl(AutoModelForCausalLM.from_pretrained(str(model_dir)))
    arch = resolve_arch(str(model_dir))
    params = param_breakdown(arch)
    block_bytes = (params.attention + params.mlp) / arch.layers * 4
    activations = args.samples * args.seq_len * arch.hidden * 4 * 2  # a block's inputs and outputs
    budget_mb = (block_bytes + params.embeddings * 4 + activations) / 2**20
    print(f"fp32 reference: ppl {reference:.3f} (Pride and Prejudice, first {ids.numel()} tokens, "
          f"window {args.window}, stride {args.stride})")
    print(f"one block + embeddings + calibration activations = {budget_mb:.0f} MB")
    print(f"{'method':<6}{'format':<11}{'seconds':>9}{'peak RSS MB':>13}{'x budget':>10}{'ppl':>9}{'vs fp32':>9}")
    rows = []
    for item in args.runs.split(","):
        method, fmt = item.split(":")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "q"
            cmd = [sys.executable, "-m", "quantwise.cli", "quantize", "smollm2-135m", "--method", method,
                   "--format", fmt, "--calib", str(calib), "--samples", str(args.samples), "--seq-len",
                   str(args.seq_len), "--out", str(out), "--json"]
            done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=dict(os.environ))
            report = json.loads(done.stdout[done.stdout.index("{"):])
            value = ppl(quantwise.load(out, kernels=False))
        rows.append(dict(method=method, format=fmt, seconds=report["seconds"], peak_rss_mb=report["peak_rss_mb"],
                         ppl=value))
        print(f"{method:<6}{fmt:<11}{report['seconds']:>9.1f}{report['peak_rss_mb']:>13.0f}"
              f"{report['peak_rss_mb'] / budget_mb:>10.2f}{value:>9.3f}{value / reference:>9.3f}")
    print(json.dumps({"reference_ppl": reference, "runs": rows, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
