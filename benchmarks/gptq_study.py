"""GPTQ option study: perplexity and time of GPTQ variants on a real model, one after another in
one process (same calibration, same evaluator), to decide defaults by measurement.

    python3 benchmarks/gptq_study.py --format int4-g64 \\
        --variant defaults= --variant old=act_order:0,static_groups:0,true_sequential:0,full_grid:0,clip_steps:0

Calibration: --samples x --seq-len tokens of Emma; perplexity: Pride and Prejudice, first
--eval-tokens tokens, window 1024, stride 512 (the issue's protocol). A variant is NAME=key:value,...
over GPTQOptions fields (booleans as 0/1).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import quantwise
from quantwise.cache import cache_dir
from quantwise.calibration import CalibrationConfig
from quantwise.cli.eval_cmd import eval_tokens
from quantwise.evaluation.perplexity import perplexity
from quantwise.methods import GPTQOptions, build_method
from quantwise.pipeline.sequential import QuantizeJob, run_quantize


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, body = text.partition("=")
    types = {f.name: f.type for f in dataclasses.fields(GPTQOptions)}
    options = {}
    for item in filter(None, body.split(",")):
        key, value = item.split(":")
        kind = types[key]
        convert = {"bool": lambda v: bool(int(v)), "int": int, "str": str}.get(kind, float)
        options[key] = convert(value)
    return name, options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--format", default="int4-g64")
    parser.add_argument("--variant", action="append", required=True)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--eval-tokens", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0, help="calibration windows' seed (as quantize --seed)")
    args = parser.parse_args()
    text = cache_dir("text") / "austen"
    ids, bos, _ = eval_tokens(cache_dir("models") / args.model, str(text / "prideprejudice.txt"), args.eval_tokens)
    calibration = CalibrationConfig((str(text / "emma.txt"),), args.samples, args.seq_len, args.seed)
    print(f"load before: {os.getloadavg()[0]:.2f}")
    rows = []
    for item in args.variant:
        name, options = parse_variant(item)
        with tempfile.TemporaryDirectory() as tmp:
            cpu, wall = os.times(), time.perf_counter()
            method = build_method("gptq", args.format, **options)
            report = run_quantize(QuantizeJob(args.model, "gptq", method, calibration, Path(tmp) / "q"))
            wall, after = time.perf_counter() - wall, os.times()
            value = perplexity(quantwise.load(Path(tmp) / "q", kernels=False), ids, 1024, 512, bos).perplexity
        row = dict(variant=name, options=options, format=args.format, ppl=value, wall_s=wall,
                   cpu_s=after.user + after.system - cpu.user - cpu.system, times=dataclasses.asdict(report.times),
                   load=os.getloadavg()[0])
        rows.append(row)
        print(f"{name:<24} ppl {value:8.3f}  wall {wall:6.1f} s  cpu {row['cpu_s']:6.1f} s  "
              + "  ".join(f"{k} {v:.1f}" for k, v in row["times"].items()) + f"  load {row['load']:.2f}", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
