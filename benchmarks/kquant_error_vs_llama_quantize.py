"""Weight error of quantwise's Q4_K / Q6_K quantizer (quantwise/checkpoint/exporters/gguf_kquants.py)
against llama-quantize's (`--pure`, no imatrix) on the same F32 tensors, both read back by gguf's
dequantizer: relative RMSE (RMSE / std of the tensor) of every tensor whose rows are multiples of 256.

    python3 benchmarks/kquant_error_vs_llama_quantize.py --model gemma-3-270m --out /tmp/kq

The F32 GGUF is written by llama.cpp's converter as in gguf_vs_llama_quantize.py. llama-quantize
minimizes a weighted error (weights ~ |x|), this reports the unweighted one. Both published small
models here are dequantized from GGUF files (SmolLM2 from Q4_1: every 32-group already on a 4-bit
grid; Gemma-3-270M from Q4_K_M), so only tensors from a finer grid (Gemma's Q6_K ffn_down, for Q4_K)
say much.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gguf_vs_llama_quantize import convert_f32  # noqa: E402

from quantwise.checkpoint.exporters.gguf_kquants import kquant_float  # noqa: E402
from quantwise.engines import llama_cpp  # noqa: E402
from quantwise.models.source import resolve_model_dir  # noqa: E402


def relative_rmse(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.sqrt(((got.reshape(want.shape) - want) ** 2).mean()) / want.std())


def main() -> None:
    import gguf

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    f32 = out / "f32.gguf"
    if not f32.exists():
        convert_f32(resolve_model_dir(args.model), f32)
    tools = llama_cpp.binaries()
    source = {t.name: t for t in gguf.GGUFReader(str(f32)).tensors}
    for kind in ("Q4_K", "Q6_K"):
        theirs_file = out / f"{kind}.gguf"
        if not theirs_file.exists():
            subprocess.run([str(tools / "llama-quantize"), "--pure", str(f32), str(theirs_file), kind], check=True,
                           capture_output=True, env={**os.environ, "LD_LIBRARY_PATH": str(tools)})
        by_family: dict[str, list[tuple[float, float]]] = {}
        for tensor in gguf.GGUFReader(str(theirs_file)).tensors:
            if tensor.tensor_type.name != kind:
                continue
            cols, rows = (int(v) for v in tensor.shape)
            w = np.asarray(source[tensor.name].data, dtype=np.float32).reshape(rows, cols)
            ours = gguf.quants.dequantize(kquant_float(torch.from_numpy(w.copy()), kind).reshape(-1),
                                          tensor.tensor_type)
            theirs = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
            family = tensor.name.split(".")[2]
            by_family.setdefault(family, []).append((relative_rmse(ours, w), relative_rmse(theirs, w)))
        for family, pairs in sorted(by_family.items()):
            ours_e, theirs_e = zip(*pairs, strict=True)
            print(f"{kind} {family}: {len(pairs)} tensors, relative RMSE quantwise {np.mean(ours_e):.5f}, "
                  f"llama-quantize {np.mean(theirs_e):.5f}; quantwise lower on {sum(a < b for a, b in pairs)}")


if __name__ == "__main__":
    main()
