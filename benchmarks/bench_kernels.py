"""How fast the packed CPU kernels stream weights, by matrix shape, measured cold: each row calls
enough distinct copies of one packed matrix in sequence (more bytes than the last-level cache) that
every call reads its weights from memory, as a decode step does. Reports GB/s of packed weights and
that as a share of the streaming-read bandwidth measured in the same run, for the raw kernel call
and for the module (input preparation and output slicing included).

    python3 benchmarks/bench_kernels.py [--megabytes 96] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy

import torch

from quantwise.evaluation.throughput import median_time, read_bandwidth
from quantwise.formats import parse_spec, quantize
from quantwise.runtime.kernels import PackedInt4Linear, PackedInt8Linear

# (label, rows, cols): SmolLM2-135M's projections, unfused and fused, its lm_head, a 7B-class matrix
SHAPES = [("o_proj / q_proj", 576, 576), ("q/k/v fused", 960, 576), ("gate/up fused", 3072, 576),
          ("down_proj", 576, 1536), ("lm_head", 49152, 576), ("4096 x 4096", 4096, 4096)]


def copies(module: torch.nn.Module, total_bytes: int) -> list[torch.nn.Module]:
    count = max(2, -(-total_bytes // module.weight_bytes))
    return [module] + [copy.deepcopy(module) for _ in range(count - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=int, default=96, help="bytes of distinct weights per row (> L3)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.threads} threads; each row's bandwidth is measured right before it\n")
    print("| kernel | matrix | shape | MB each | calls | raw GB/s | raw %BW | module GB/s | module %BW | us/call "
          "| read GB/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    gen = torch.Generator().manual_seed(0)
    for kernel, fmt in ((PackedInt4Linear, "int4-g64"), (PackedInt8Linear, "int8-channel")):
        for label, rows, cols in SHAPES:
            qt = quantize(torch.randn(rows, cols, generator=gen) * 0.05, parse_spec(fmt))
            modules = copies(kernel(qt, None, None), args.megabytes * 2**20)
            x = torch.randn(1, cols, dtype=torch.bfloat16, generator=gen)
            prepared = modules[0]._kernel_input(x)
            if kernel is PackedInt4Linear:
                def raw(modules=modules, prepared=prepared):
                    return [m._mm(prepared, m.packed, m.group, m.scales_and_zeros) for m in modules]
            else:
                def raw(modules=modules, prepared=prepared):
                    return [torch.ops.aten._weight_int8pack_mm(prepared, m.weight, m.scales) for m in modules]
            total = sum(m.weight_bytes for m in modules)
            bandwidth = read_bandwidth()
            with torch.no_grad():
                raw_s, _ = median_time(raw, 7)
                module_s, _ = median_time(lambda modules=modules, x=x: [m(x) for m in modules], 7)
            raw_rate, module_rate = total / raw_s / 1e9, total / module_s / 1e9
            print(f"| {kernel.__name__} | {label} | {rows}x{cols} | {modules[0].weight_bytes / 2**20:.2f} | "
                  f"{len(modules)} | {raw_rate:.1f} | {raw_rate / bandwidth:.0%} | {module_rate:.1f} | "
                  f"{module_rate / bandwidth:.0%} | {module_s / len(modules) * 1e6:.1f} | {bandwidth:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
