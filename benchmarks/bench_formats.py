"""Time quantize+pack and dequantize of a 4096x4096 fp32 matrix per format, as ratios to a plain
tensor copy of the same matrix measured in the same run (timings here are noisy; ratios travel).

    python3 benchmarks/bench_formats.py [--size 4096] [--repeats 5]
"""

from __future__ import annotations

import argparse

import torch

from quantwise.evaluation.throughput import median_time
from quantwise.formats import dequantize, parse_spec, quantize

FORMATS = ["int8-channel", "int8-tensor", "fp8_e4m3-tensor", "fp8_e4m3-channel", "fp8_e5m2-channel",
           "int4-g128", "int4-g128-asym", "int3-g128", "nf4-g64", "nf4-g64-dq"]
TARGETS = {"int8": 5.0, "fp8": 5.0, "int4": 10.0, "nf4": 10.0, "int3": 10.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    x = torch.randn(args.size, args.size)
    copy_s = median_time(lambda: x.clone(), args.repeats)[0]
    print(f"threads={torch.get_num_threads()}  copy of {args.size}x{args.size} fp32: {copy_s * 1e3:.1f} ms")
    print(f"{'format':<18}{'quantize x copy':>16}{'dequant x copy':>16}{'target':>8}")
    for name in FORMATS:
        spec = parse_spec(name)
        packed = quantize(x, spec)
        q_s = median_time(lambda spec=spec: quantize(x, spec), args.repeats)[0]
        d_s = median_time(lambda packed=packed: dequantize(packed), args.repeats)[0]
        target = TARGETS[name.split("-")[0].split("_")[0]]
        print(f"{name:<18}{q_s / copy_s:>16.1f}{d_s / copy_s:>16.1f}{target:>7.0f}x")


if __name__ == "__main__":
    main()
