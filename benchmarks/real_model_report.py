"""The acceptance table on SmolLM2-135M: quality (held-out Austen), size and CPU decode speed for
fp32, INT8 per-channel, INT4 g128 RTN/GPTQ/AWQ, NF4, FP8 E4M3 and W8A8 SmoothQuant (every linear
including lm_head quantized; the input embeddings stay fp32).
Run `quantwise data fetch` first; checkpoints are kept under $QUANTWISE_CACHE/runs.

    python3 benchmarks/real_model_report.py [--samples 32] [--eval-tokens 4096]
"""

from __future__ import annotations

import argparse
import json

from transformers import AutoModelForCausalLM, AutoTokenizer

import quantwise
from quantwise.cache import cache_dir
from quantwise.calibration import CalibrationConfig
from quantwise.evaluation.compare import compare_models
from quantwise.evaluation.memory import inspect_checkpoint
from quantwise.evaluation.throughput import annotate, bench_model, probe_machine
from quantwise.methods import build_method
from quantwise.pipeline.checkpoint import MANIFEST
from quantwise.pipeline.sequential import QuantizeJob, run_quantize

RUNS = {  # name: (method, format, options)
    "int8-channel rtn": ("rtn", "int8-channel", {}),
    "int4-g128 rtn": ("rtn", "int4-g128", {}),
    "int4-g128 gptq": ("gptq", "int4-g128", {}),
    "int4-g128 awq": ("awq", "int4-g128", {}),
    "nf4-g64 rtn": ("rtn", "nf4-g64", {}),
    "fp8_e4m3-channel rtn": ("rtn", "fp8_e4m3-channel", {}),
    "w8a8 smoothquant": ("smoothquant", "int8-channel", {"alpha": 0.5}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--eval-tokens", type=int, default=4096)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--skip-bench", action="store_true")
    args = parser.parse_args()
    model_dir = cache_dir("models") / "smollm2-135m"
    text = cache_dir("text") / "austen"
    calibration = CalibrationConfig((str(text / "emma.txt"),), args.samples, args.seq_len)
    checkpoints = {}
    for name, (method, fmt, options) in RUNS.items():
        out = cache_dir("runs") / name.replace(" ", "_")
        if not (out / MANIFEST).exists():
            report = run_quantize(QuantizeJob("smollm2-135m", method, build_method(method, fmt, **options),
                                              calibration, out, quantize_lm_head=True))
            print(f"quantized {name}: {report.seconds:.0f} s, peak RSS {report.peak_rss_mb:.0f} MB", flush=True)
        checkpoints[name] = out
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    ids = tokenizer((text / "prideprejudice.txt").read_text(), return_tensors="pt",
                    add_special_tokens=False)["input_ids"][0][: args.eval_tokens]
    reference = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    models = {name: quantwise.load(path) for name, path in checkpoints.items()}
    quality = {row.name: row for row in compare_models(reference, models, ids, 1024, 512, reference_name="fp32")}
    sizes = {name: inspect_checkpoint(path) for name, path in checkpoints.items()}
    speed = {}
    if not args.skip_bench:
        probe = probe_machine()
        batches = [int(b) for b in args.batches.split(",")]
        rows = bench_model(AutoModelForCausalLM.from_pretrained(str(model_dir)).eval(), "smollm2", "fp32", batches,
                           probe)
        for name in checkpoints:
            rows += bench_model(quantwise.load(checkpoints[name]), "smollm2", name, batches, probe)
        annotate(rows)
        for row in rows:
            speed[(row.format, row.batch)] = row
        print(f"machine: read bandwidth {probe.read_gb_per_s:.1f} GB/s, {probe.threads} threads")
    print(f"\nSmolLM2-135M, Pride and Prejudice first {ids.numel()} tokens (window 1024, stride 512); "
          f"calibration {args.samples} x {args.seq_len} tokens of Emma")
    head = "| model | ppl | KL | top-1 | linear bits/w | disk MB |"
    batches = sorted({b for _, b in speed})
    head += "".join(f" tok/s b{b} | x fp32 b{b} | linear %BW b{b} |" for b in batches)
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for name in ["fp32", *checkpoints]:
        q = quality[name]
        size = sizes.get(name)
        line = (f"| {name} | {q.perplexity:.3f} | {q.kl_mean:.4f} | {q.top1_agreement:.1%} | "
                f"{size.linear_bits_per_weight if size else 32:.3f} | "
                f"{(size.disk_bytes if size else (model_dir / 'model.safetensors').stat().st_size) / 2**20:.1f} |")
        for b in batches:
            row = speed.get((name, b))
            ratio = "1.00" if name == "fp32" else f"{row.speedup_vs_fp32:.2f}"
            line += f" {row.decode_tokens_per_s:.1f} | {ratio} | {row.linear_bw_fraction:.0%} |"
        print(line)
    print(json.dumps({k: vars(v) for k, v in quality.items()}, default=str))


if __name__ == "__main__":
    main()
