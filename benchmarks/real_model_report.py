"""The acceptance table on a real model: quality (held-out Austen), size and CPU decode speed for
fp32, bf16, INT8 per-channel, INT4 g128 RTN/GPTQ/AWQ, NF4, FP8 E4M3 and W8A8 SmoothQuant (every
linear including lm_head quantized; the input embeddings stay fp32).
Run `quantwise data fetch` first; checkpoints are kept under $QUANTWISE_CACHE/runs/MODEL, so a
rerun only measures.

    python3 benchmarks/real_model_report.py [--model smollm2-135m] [--samples 32] [--eval-tokens 4096]
        [--out report.md]

Speed rows run as `quantwise bench` runs them: fp32 with fp32 activations, every other row with
bf16 activations (the A16 of W4A16 and the packed CPU kernels' fast path), q/k/v and gate/up fused.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

import quantwise
from quantwise.cache import cache_dir
from quantwise.calibration import CalibrationConfig
from quantwise.checkpoint import MANIFEST
from quantwise.cli.eval_cmd import eval_tokens
from quantwise.evaluation.compare import compare_models
from quantwise.evaluation.memory import inspect_checkpoint
from quantwise.evaluation.throughput import annotate, bench_model, probe_machine
from quantwise.methods import build_method
from quantwise.models.source import resolve_model_dir
from quantwise.pipeline.sequential import QuantizeJob, run_quantize
from quantwise.reporting import print_json

RUNS = {  # name: (method, format, options)
    "int8-channel rtn": ("rtn", "int8-channel", {}),
    "int4-g128 rtn": ("rtn", "int4-g128", {}),
    "int4-g128 gptq": ("gptq", "int4-g128", {}),
    "int4-g128 awq": ("awq", "int4-g128", {}),
    "nf4-g64 rtn": ("rtn", "nf4-g64", {}),
    "fp8_e4m3-channel rtn": ("rtn", "fp8_e4m3-channel", {}),
    "w8a8 smoothquant": ("smoothquant", "int8-channel", {"alpha": 0.5}),
}


def quantize_all(model: str, calibration: CalibrationConfig, names: list[str]) -> dict[str, Path]:
    checkpoints = {}
    for name in names:
        method, fmt, options = RUNS[name]
        out = cache_dir("runs") / model / name.replace(" ", "_")
        if not (out / MANIFEST).exists():
            report = run_quantize(QuantizeJob(model, method, build_method(method, fmt, **options), calibration, out,
                                              quantize_lm_head=True))
            print(f"quantized {name}: {report.seconds:.0f} s, peak RSS {report.peak_rss_mb:.0f} MB", flush=True)
        checkpoints[name] = out
    return checkpoints


def reference(model_dir: Path, dtype: torch.dtype = torch.float32):
    return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype).eval()


def markdown(quality: dict, sizes: dict, speed: dict, reference_bytes: int) -> str:
    batches = sorted({b for _, b in speed})
    head = "| model | ppl | KL | top-1 | linear bits/w | disk MiB |"
    head += "".join(f" tok/s b{b} | x fp32 b{b} | linear %BW b{b} |" for b in batches)
    head += " read GB/s |" if batches else ""
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, q in quality.items():
        size = sizes.get(name)
        bits = size.linear_bits_per_weight if size else (16.0 if name == "bf16" else 32.0)
        disk = (size.disk_bytes if size else reference_bytes) / 2**20
        line = f"| {name} | {q.perplexity:.3f} | {q.kl_mean:.4f} | {q.top1_agreement:.1%} | {bits:.3f} | {disk:.1f} |"
        for b in batches:
            row = speed.get((name, b))
            if row is None:
                line += " - | - | - |"
                continue
            ratio = 1.0 if row.speedup_vs_fp32 is None else row.speedup_vs_fp32
            line += f" {row.decode_tokens_per_s:.1f} | {ratio:.2f} | {row.linear_bw_fraction:.0%} |"
        first = speed.get((name, batches[0])) if batches else None
        if batches:
            line += f" {first.read_gb_per_s:.1f} |" if first else " - |"
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--eval-tokens", type=int, default=4096)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--runs", default=",".join(RUNS), help="comma-separated subset of: " + ", ".join(RUNS))
    parser.add_argument("--skip-bench", action="store_true")
    parser.add_argument("--skip-bf16", action="store_true",
                        help="no bf16 row (its matmuls run ~18x slower than fp32 on AVX2-only CPUs)")
    parser.add_argument("--out", type=Path, help="also write the markdown table and JSON rows here")
    args = parser.parse_args()
    names = [n.strip() for n in args.runs.split(",") if n.strip()]
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        parser.error(f"unknown runs {unknown}; choose from {list(RUNS)}")
    model_dir = resolve_model_dir(args.model)
    text = cache_dir("text") / "austen"
    calibration = CalibrationConfig((str(text / "emma.txt"),), args.samples, args.seq_len)
    checkpoints = quantize_all(args.model, calibration, names)

    ids, bos, text_bytes = eval_tokens(model_dir, str(text / "prideprejudice.txt"), args.eval_tokens)
    # one candidate in memory at a time (Gemma-3's 262k-row lm_head makes each model large); the
    # reference's log-probabilities are recomputed per candidate, cheaper than holding them all
    fp32 = reference(model_dir)
    loaders = {**({} if args.skip_bf16 else {"bf16": lambda: reference(model_dir, torch.bfloat16)}),
               **{name: (lambda path=path: quantwise.load(path, kernels=False)) for name, path in checkpoints.items()}}
    quality = {}
    for name, load in loaders.items():
        rows = compare_models(fp32, {name: load()}, ids, 1024, 512, bos, text_bytes, reference_name="fp32")
        quality.setdefault("fp32", rows[0])
        quality[name] = rows[1]
        print(f"{name}: ppl {rows[1].perplexity:.3f}, KL {rows[1].kl_mean:.4f}", flush=True)
    del fp32
    sizes = {name: inspect_checkpoint(path) for name, path in checkpoints.items()}
    print(f"quality done: {len(quality)} rows", flush=True)

    speed, probe = {}, None
    if not args.skip_bench:
        probe = probe_machine()
        batches = [int(b) for b in args.batches.split(",")]
        bench_rows = bench_model(reference(model_dir), args.model, "fp32", batches, probe)
        bench_rows += bench_model(reference(model_dir), args.model, "bf16", batches, probe,
                                  activations=torch.bfloat16)
        for name, path in checkpoints.items():
            bench_rows += bench_model(quantwise.load(path, kernels=False), args.model, name, batches, probe,
                                      activations=torch.bfloat16)
        annotate(bench_rows)
        speed = {(row.format, row.batch): row for row in bench_rows}

    title = (f"{args.model}, Pride and Prejudice first {ids.numel()} tokens (window 1024, stride 512); "
             f"calibration {args.samples} x {args.seq_len} tokens of Emma")
    if probe is not None:
        title += (f"; {probe.threads} threads; each row's %BW is taken of the read bandwidth measured next to "
                  f"it (last column, batch {batches[0]})")
    table = markdown(quality, sizes, speed, (model_dir / "model.safetensors").stat().st_size)
    print(f"\n{title}\n\n{table}")
    for row in speed.values():
        if row.note:
            print(f"- {row.format} batch {row.batch}: {row.note}")
    if args.out:
        args.out.write_text(f"{title}\n\n{table}\n")
        with args.out.with_suffix(".json").open("w") as handle:
            print_json({"title": title, "machine": probe, "quality": list(quality.values()), "sizes": sizes,
                        "speed": list(speed.values())}, handle)


if __name__ == "__main__":
    main()
