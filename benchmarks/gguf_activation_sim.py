"""quantwise's perplexity of an imported GGUF export, plain and with llama.cpp's activation
quantization simulated: int8 per 256 values (Q8_K) into K-quant layers, int8 per 32 (Q8_0) into
Q4_0 / Q8_0 layers. Explains most of the gap between llama-perplexity and quantwise on K-quant
exports (README, "K-quants").

    quantwise quantize gemma-3-270m --method rtn --format int4-g32 --calib emma.txt --samples 2 --seq-len 64 --out ckpt
    quantwise export ckpt --to gguf --gguf-type q6_k --out g
    # then quantwise.checkpoint.importers.import_checkpoint("g/model.gguf", "imported")
    python3 benchmarks/gguf_activation_sim.py g/model.gguf imported eval.txt   # P&P's first 40,000 characters
"""

from __future__ import annotations

import argparse

import torch

import quantwise
from quantwise.engines import llama_cpp
from quantwise.evaluation.perplexity import chunked_perplexity
from quantwise.formats import parse_spec

K_QUANT_SPECS = ("affine4-g32", "int6-g16")  # Q4_K and Q6_K imports (float32 scales; Q4_1's are fp16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("gguf")
    parser.add_argument("checkpoint", help="the same file imported as a quantwise checkpoint")
    parser.add_argument("text")
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--chunks", type=int, default=4)
    args = parser.parse_args()
    ids = torch.tensor(llama_cpp.tokenize(args.gguf, args.text))
    bos = llama_cpp.perplexity_bos(args.gguf)
    for simulated in (False, True):
        model = quantwise.load(args.checkpoint, kernels=False)
        if simulated:
            for module in model.modules():
                if hasattr(module, "weight_q"):
                    spec = module.weight_q.spec
                    k_quant = spec.name in K_QUANT_SPECS and spec.scale_dtype_name == "float32"
                    module.act_spec = parse_spec("int8-g256" if k_quant else "int8-g32")
        result = chunked_perplexity(model, ids, args.chunk, args.chunks, bos_id=bos)
        print("activations simulated" if simulated else "plain", f"{result.perplexity:.3f}", flush=True)


if __name__ == "__main__":
    main()
