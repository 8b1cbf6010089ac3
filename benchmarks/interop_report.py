"""Exports measured in the engines that serve them, beside quantwise's own evaluation of the same
checkpoint on the same tokens and chunks (llama-perplexity's scheme: chunks of --ctx tokens, each
scoring its second half).

    python3 benchmarks/interop_report.py --checkpoint gptq-g64=runs/smol-gptq-g64 \
        --checkpoint int8=runs/smol-rtn-int8 --checkpoint w8a8=runs/smol-sq --checkpoint fp8=runs/smol-fp8

For each checkpoint: every export its formats allow (GGUF -> llama.cpp; compressed-tensors, GPTQ,
AWQ -> vLLM), the engine's perplexity, ours in fp32 and in bf16 (vLLM computes in bf16), the
ratio, and vLLM's top-1 agreement with our bf16 evaluation. Engines come from scripts/peers.sh.

`--baseline MODEL_DIR` also scores the unquantized model in vLLM and in transformers (bf16), and
puts each checkpoint's perplexity cost in each evaluator beside the other: when the engine's own
bf16 numerics already differ from ours, the cost of quantization is what the two can agree on.
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
    return _score(quantwise.load(ckpt, kernels=False, dtype=dtype), ids, ctx, chunks)


def transformers_scores(model_dir: Path, ids: torch.Tensor, ctx: int, chunks: int, dtype) -> tuple[float, list]:
    """our_scores for an unquantized model, loaded by transformers."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
    return _score(model, ids, ctx, chunks)


def _score(model, ids: torch.Tensor, ctx: int, chunks: int) -> tuple[float, list[list[int]]]:
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


def _chunk_lists(ids: torch.Tensor, ctx: int, chunks: int) -> list[list[int]]:
    return [ids[i * ctx:(i + 1) * ctx].tolist() for i in range(chunks)]


def _baseline_row(model_dir: Path, ids: torch.Tensor, ctx: int, chunks: int) -> dict:
    ours16, top16 = transformers_scores(model_dir, ids, ctx, chunks, torch.bfloat16)
    row = {"checkpoint": "unquantized", "export": "-", "ours_bf16": ours16, "vs": "ours_bf16"}
    try:
        theirs = vllm_engine.score_chunks(model_dir, _chunk_lists(ids, ctx, chunks))
    except RuntimeError as exc:
        return {**row, "engine": "vllm", "error": str(exc)[:300]}
    return {**row, "engine": "vllm", "engine_ppl": theirs.perplexity, "ratio": theirs.perplexity / ours16,
            "top1_agreement": agreement(theirs.top1, top16)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", action="append", required=True, metavar="NAME=PATH")
    parser.add_argument("--text", default=str(cache_dir("text") / "austen" / "prideprejudice.txt"))
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--engines", default="llama.cpp,vllm")
    parser.add_argument("--out", default=None, help="JSON file for the rows")
    parser.add_argument("--baseline", default=None, metavar="MODEL_DIR",
                        help="the unquantized model, scored by vLLM and transformers (bf16)")
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
                if gguf_file is not None and "llama.cpp" in engines:
                    ids = torch.tensor(llama_cpp.tokenize(gguf_file, text))
                else:  # no llama.cpp in this run: the checkpoint's own (transformers) tokenizer
                    from transformers import AutoTokenizer

                    ids = AutoTokenizer.from_pretrained(str(ckpt))(text.read_text(encoding="utf-8"),
                                                                   return_tensors="pt")["input_ids"][0]
                print(f"{len(ids)} tokens; {args.chunks} chunks of {args.ctx}", flush=True)
                if args.baseline:
                    base = _baseline_row(Path(args.baseline), ids, args.ctx, args.chunks)
                    rows.append(base)
                    print(json.dumps(base), flush=True)
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
                    try:
                        theirs = vllm_engine.score_chunks(out, _chunk_lists(ids, args.ctx, args.chunks))
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
                if args.baseline and row["engine"] == "vllm" and "engine_ppl" in base:
                    row["engine_cost"] = row["engine_ppl"] / base["engine_ppl"]   # quantization's cost in vLLM
                    row["ours_cost"] = row["ours_bf16"] / base["ours_bf16"]        # and in ours
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
    costs = [r for r in rows if "engine_cost" in r]
    if costs:
        print()
        print("| checkpoint | export | vLLM ppl / vLLM unquantized | ours bf16 / ours unquantized bf16 | difference |")
        print("|---|---|---|---|---|")
        for r in costs:
            print(f"| {r['checkpoint']} | {r['export']} | {r['engine_cost']:.4f} | {r['ours_cost']:.4f} "
                  f"| {r['engine_cost'] / r['ours_cost'] - 1:+.2%} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
