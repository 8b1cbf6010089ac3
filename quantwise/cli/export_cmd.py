"""`quantwise export`: a quantwise checkpoint in a format a serving engine loads."""

from __future__ import annotations

import click

from .common import json_option

_DTYPES = ("float32", "bfloat16", "float16")




@click.command("export")
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False))
@click.option("--to", "to", required=True, metavar="FORMAT",
              help="compressed-tensors (vLLM, SGLang, transformers), gptq / awq (vLLM, GPTQModel), gguf (llama.cpp); "
                   "the exporter registry in quantwise/checkpoint/exporters lists them.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output directory (written whole, "
              "or not at all).")
@click.option("--dtype", type=click.Choice(_DTYPES), default=None,
              help="dtype of the unquantized tensors and scales (default: the source model's).")
@click.option("--gguf-pre", default=None, help="llama.cpp pre-tokenizer name, when quantwise does not know the "
              "tokenizer (see quantwise/data/gguf_pretokenizers.csv).")
@click.option("--gguf-vocab", type=click.Path(exists=True, dir_okay=False), default=None,
              help="GGUF file whose tokenizer to copy (SentencePiece-style vocabularies such as Gemma's; found "
                   "automatically when the model was dequantized from a GGUF by quantwise).")
@click.option("--gguf-type", type=click.Choice(["q4_k", "q6_k"], case_sensitive=False), default=None,
              help="GGUF K-quant for layers whose input width is a multiple of 256 (exact where the codes fit its "
                   "grid, else re-quantized from the dequantized weights); other layers keep Q4_0 / Q4_1 / Q8_0.")
@click.option("--gguf-embeddings", type=click.Choice(["auto", "f32"]), default="auto", show_default=True,
              help="GGUF token embeddings and output: auto stores them as llama-quantize does (Q6_K or Q8_0), f32 "
                   "keeps them float.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@json_option
def export_command(checkpoint, to, out, dtype, gguf_pre, gguf_vocab, gguf_type, gguf_embeddings, overwrite,
                   as_json) -> None:
    """Write CHECKPOINT (from `quantwise quantize`) as TO into --out. What the target's engines
    cannot load is refused before anything is written, with the reason and the fix."""
    import torch

    from ..checkpoint.exporters import ExportOptions, export
    from ..reporting import print_json

    options = ExportOptions(dtype=getattr(torch, dtype) if dtype else None, gguf_pre=gguf_pre,
                            gguf_vocab=gguf_vocab, gguf_type=gguf_type, gguf_embeddings=gguf_embeddings)
    result = export(checkpoint, to, out, options, overwrite)
    if as_json:
        print_json(result)
        return
    kinds = result.get("tensor_types") or [result.get("quantization_config", {}).get("format")
                                           or result.get("quantization_config", {}).get("quant_method")]
    click.echo(f"wrote {out}: {to} ({', '.join(k for k in kinds if k)}), loads in {result['engines']}")
    for line in result.get("kquant_fallback", []):
        click.echo(f"  not a K-quant: {line}")
