"""GGUF export size and llama.cpp perplexity with the token embeddings and output stored as
llama-quantize stores them (the default) and kept in F32, for one quantwise checkpoint.

    python3 benchmarks/gguf_embeddings.py CHECKPOINT OUT_DIR

llama-perplexity: 16 chunks of 512 tokens of Pride and Prejudice (the scheme of
gguf_vs_llama_quantize.py). Needs `bash scripts/peers.sh llama.cpp`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from quantwise.cache import cache_dir
from quantwise.checkpoint.exporters import ExportOptions, export
from quantwise.engines import llama_cpp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    text = cache_dir("text") / "austen" / "prideprejudice.txt"
    for name, options in (("auto", ExportOptions()), ("f32", ExportOptions(gguf_embeddings="f32"))):
        result = export(args.checkpoint, "gguf", args.out / name, options, overwrite=True)
        ppl = llama_cpp.perplexity(args.out / name / "model.gguf", text, 512, 16).perplexity
        print(f"{name}: {result['bytes'] / 2**20:.1f} MiB, linears {result['tensor_types']}, "
              f"embeddings {result['embedding_types']}, llama-perplexity {ppl:.4f}", flush=True)


if __name__ == "__main__":
    main()
