"""The model `quantwise.load` returns against the fp32 model in plain transformers: generation
speed and resident memory, each in a fresh process (so peak RSS is its own), back to back.

    python3 benchmarks/load_vs_transformers.py runs/smol-gptq-g64 [--model smollm2-135m] [--tokens 64]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

_CHILD = r"""
import json, sys, time, torch
from quantwise.sysinfo import peak_rss_mb
torch.set_num_threads(int(sys.argv[4]))
kind, path, tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
from transformers import AutoTokenizer
if kind == "quantwise":
    import quantwise
    model = quantwise.load(path)
else:
    from transformers import AutoModelForCausalLM
    from quantwise.models.source import resolve_model_dir
    path = str(resolve_model_dir(path))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
loaded = peak_rss_mb()
tok = AutoTokenizer.from_pretrained(path)
ids = tok("It is a truth universally acknowledged, that a single man in possession", return_tensors="pt")["input_ids"]
with torch.no_grad():
    model.generate(ids, max_new_tokens=4, do_sample=False)  # warm-up: first-call allocations and packing
    start = time.perf_counter()
    out = model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
    seconds = time.perf_counter() - start
print(json.dumps({"tokens_per_s": tokens / seconds, "load_rss_mb": loaded, "peak_rss_mb": peak_rss_mb(),
                  "text": tok.decode(out[0, ids.shape[1]:])[:80]}))
"""


def run(kind: str, path: str, tokens: int, threads: int) -> dict:
    done = subprocess.run([sys.executable, "-c", _CHILD, kind, path, str(tokens), str(threads)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    fp32 = run("transformers", args.model, args.tokens, args.threads)
    ours = run("quantwise", args.checkpoint, args.tokens, args.threads)
    print(json.dumps({"transformers fp32": fp32, "quantwise.load": ours}, indent=2))
    speed = ours["tokens_per_s"] / fp32["tokens_per_s"]
    memory = ours["peak_rss_mb"] / fp32["peak_rss_mb"]
    print(f"generation: quantwise.load {ours['tokens_per_s']:.1f} tok/s vs fp32 transformers "
          f"{fp32['tokens_per_s']:.1f} tok/s = {speed:.2f}x; peak RSS {ours['peak_rss_mb']:.0f} vs "
          f"{fp32['peak_rss_mb']:.0f} MB = {memory:.2f}x")


if __name__ == "__main__":
    main()
