"""A peer's own checkpoint measured by quantwise: GPTQModel or llm-compressor quantizes SmolLM2
(GPTQ INT4 g64, the peer's defaults) in its own environment; the result is evaluated by the peer's
own loader (GPTQModel; transformers + compressed-tensors in llm-compressor's environment) and,
imported with its codes, by quantwise, on the same tokens and chunks.

    python3 benchmarks/peer_checkpoints.py [--peer gptqmodel|llm-compressor] [--samples 32] [--chunks 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path

from gptq_vs_peers import _GPTQMODEL, _LLMCOMPRESSOR

import quantwise
from quantwise.cache import cache_dir
from quantwise.calibration import load_texts, token_samples
from quantwise.checkpoint.importers import as_native
from quantwise.engines import gptqmodel_engine, llmcompressor_engine
from quantwise.evaluation.perplexity import chunked_perplexity
from quantwise.models.source import resolve_model_dir
from quantwise.models.tokenizer import load_text_tokenizer

# the peers' own quantize scripts, shared with the speed/quality comparison
PEERS = {"gptqmodel": (gptqmodel_engine, _GPTQMODEL), "llm-compressor": (llmcompressor_engine, _LLMCOMPRESSOR)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--peer", choices=["gptqmodel", "llm-compressor"], default="gptqmodel")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--group-size", type=int, default=64)
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--keep", default=None, help="directory to keep the peer's checkpoint in")
    args = parser.parse_args()
    model_dir = resolve_model_dir(args.model)
    tokenizer = load_text_tokenizer(model_dir)
    text = cache_dir("text") / "austen"
    calib = token_samples(tokenizer, load_texts([str(text / "emma.txt")]), args.samples, args.seq_len, 0)
    ids = tokenizer.ids((text / "prideprejudice.txt").read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as tmp:
        engine, script = PEERS[args.peer]
        out = Path(args.keep) if args.keep else Path(tmp) / args.peer
        if not (out / "config.json").exists():
            request = Path(tmp) / "request.json"
            request.write_text(json.dumps({"model": str(model_dir), "group_size": args.group_size, "out": str(out),
                                           "calibration": calib.tolist()}))
            subprocess.run([str(engine.python()), "-c", script, str(request)], check=True,
                           env={**os.environ, "GPTQMODEL_CPU_WORKERS": str(os.cpu_count() or 1)})
        chunks = [ids[i * args.ctx:(i + 1) * args.ctx].tolist() for i in range(args.chunks)]
        theirs = engine.score_chunks(out, chunks)
        imported = quantwise.load(as_native(out), kernels=False)
        ours = chunked_perplexity(imported, ids, args.ctx, args.chunks).perplexity
    row = {"checkpoint": f"{args.peer} GPTQ int4 g{args.group_size}", "peer_perplexity": theirs.perplexity,
           "peer_loader_recognised": theirs.quantization, "quantwise_perplexity_of_import": ours,
           "ratio": ours / theirs.perplexity}
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
