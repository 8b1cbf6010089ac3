"""Exports measured in the engines that serve them, beside quantwise's own evaluation of the same
checkpoint on the same tokens and chunks (llama-perplexity's scheme: chunks of --ctx tokens, each
scoring its second half).

    python3 benchmarks/interop_report.py --checkpoint gptq-g64=runs/smol-gptq-g64 \
        --checkpoint int8=runs/smol-rtn-int8 --checkpoint w8a8=runs/smol-sq --checkpoint fp8=runs/smol-fp8

For each checkpoint: every export its formats allow (GGUF -> llama.cpp; compressed-tensors, GPTQ,
AWQ -> vLLM), the engine's perplexity, ours in fp32 and in bf16 (vLLM computes in bf16), the
ratio, and vLLM's top-1 agreement with our bf16 evaluation. Engines come from scripts/peers.sh.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import torch

import quantwise
from quantwise.cache import cache_dir
from quantwise.checkpoint.exporters import ExportError, export
from quantwise.engines import llama_cpp, vllm_engine


def our_scores(ckpt: Path, ids: torch.Tensor, ctx: int, chunks: int, dtype) -> tuple[float, list[list[int]]]:
    """Perplexity in llama-perplexity's scheme and the top-1 token at each scored position, one pass."""
    model = quantwise.load(ckpt, kernels=False, dtype=dtype)
    first, nll, count, top1 = ctx // 2, 0.0, 0, []
    with torch.no_grad():
        for index in range(chunks):
            chunk = ids[index * ctx:(index + 1) * ctx]
            logits = model(chunk.unsqueeze(0)).logits[0, first:ctx - 1].float()
            nll += float(torch.nn.functional.cross_entropy(logits, chunk[first + 1:], reduction="sum"))
            count += ctx - 1 - first
            top1.append(logits.argmax(-1).tolist())
    return math.exp(nll / count), top1


def agreement(a: list[list[int]], b: list[list[int]]) -> float:
    pairs = [(x, y) for ca, cb in zip(a, b, strict=True) for x, y in zip(ca, cb, strict=True)]
    return sum(x == y for x, y in pairs) / len(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", action="append", required=True, metavar="NAME=PATH")
    parser.add_argument("--text", default=str(cache_dir("text") / "austen" / "prideprejudice.txt"))
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--engines", default="llama.cpp,vllm")
    parser.add_argument("--out", default=None, help="JSON file for the rows")
    args = parser.parse_args()
    engines = set(args.engines.split(","))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / "eval.txt"  # llama-perplexity reads a file: give it exactly the chunks scored
        text.write_text(Path(args.text).read_text(encoding="utf-8"), encoding="utf-8")
        ids = None
        for spec in args.checkpoint:
            name, path = spec.split("=", 1)
            ckpt = Path(path)
            exports = {}
            for fmt in ("gguf", "compressed-tensors", "gptq", "awq"):
                try:
                    exports[fmt] = export(ckpt, fmt, Path(tmp) / f"{name}-{fmt}")
                except ExportError as exc:
                    print(f"{name}: no {fmt} export ({exc})")
            if ids is None:  # llama.cpp's own tokens of the text: every evaluator scores exactly these
                gguf_file = next((Path(e["out"]) / "model.gguf" for f, e in exports.items() if f == "gguf"), None)
                if gguf_file is None:
                    raise SystemExit("the first checkpoint must export to GGUF (its tokens fix the evaluation)")
                ids = torch.tensor(llama_cpp.tokenize(gguf_file, text))
            ours32, _ = our_scores(ckpt, ids, args.ctx, args.chunks, None)
            ours16, top16 = our_scores(ckpt, ids, args.ctx, args.chunks, torch.bfloat16)
            for fmt, result in exports.items():
                out = Path(result["out"])
                row = {"checkpoint": name, "export": fmt, "ours_fp32": ours32, "ours_bf16": ours16}
                if fmt == "gguf" and "llama.cpp" in engines:
                    theirs = llama_cpp.perplexity(out / "model.gguf", text, args.ctx, args.chunks)
                    row.update(engine="llama.cpp", engine_ppl=theirs.perplexity, vs="ours_fp32",
                               types=",".join(result["tensor_types"]))
                elif fmt != "gguf" and "vllm" in engines:
                    chunks = [ids[i * args.ctx:(i + 1) * args.ctx].tolist() for i in range(args.chunks)]
                    try:
                        theirs = vllm_engine.score_chunks(out, chunks)
                    except RuntimeError as exc:
                        row.update(engine="vllm", error=str(exc)[:300])
                        rows.append(row)
                        print(json.dumps(row), flush=True)
                        continue
                    row.update(engine="vllm", engine_ppl=theirs.perplexity, vs="ours_bf16",
                               top1_agreement=agreement(theirs.top1, top16), vllm_quantization=theirs.quantization)
                else:
                    continue
                row["ratio"] = row["engine_ppl"] / row[row["vs"]]
                rows.append(row)
                print(json.dumps(row), flush=True)
    print()
    print("| checkpoint | export | engine | engine ppl | quantwise ppl (same tokens) | ratio | top-1 vs ours |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['checkpoint']} | {r['export']} | {r['engine']} | failed: {r['error'][:80]} | | | |")
            continue
        agree = f"{r['top1_agreement']:.1%}" if "top1_agreement" in r else "-"
        print(f"| {r['checkpoint']} | {r['export']}{' (' + r['types'] + ')' if 'types' in r else ''} | {r['engine']} "
              f"| {r['engine_ppl']:.3f} | {r[r['vs']]:.3f} ({r['vs'][5:]}) | {r['ratio']:.4f} | {agree} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
