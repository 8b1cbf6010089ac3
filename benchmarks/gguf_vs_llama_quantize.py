"""quantwise's GPTQ codes in llama.cpp's Q4_0 blocks against llama.cpp's own `llama-quantize`
(round to nearest, and importance-weighted with an imatrix from the same calibration text),
all measured by llama.cpp's `llama-perplexity` on the same text, context and chunks.

    python3 benchmarks/gguf_vs_llama_quantize.py --checkpoint gptq-g32=runs/smol-gptq-g32 [--checkpoint ...]
    python3 benchmarks/gguf_vs_llama_quantize.py --model gemma-3-270m --checkpoint ...

The F32 source GGUF is written by llama.cpp's own converter (convert_hf_to_gguf.py from the
sources scripts/peers.sh unpacked) from the same fp32 weights quantwise quantized; the converter
needs `sentencepiece` importable even for BPE tokenizers (pip install sentencepiece). A model
quantwise dequantized from a GGUF with a SentencePiece vocabulary (Gemma-3-270M) has no
tokenizer.model for the converter: it runs with its set_vocab replaced by a copy of that GGUF's
tokenizer keys, the same vocabulary quantwise's export copies; weights and metadata stay its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

import quantwise
from quantwise.cache import cache_dir
from quantwise.checkpoint.exporters import export
from quantwise.checkpoint.exporters.base import hf_architectures
from quantwise.checkpoint.exporters.gguf import byte_level_bpe, model_source_gguf
from quantwise.engines import llama_cpp
from quantwise.evaluation.perplexity import chunked_perplexity
from quantwise.models.source import resolve_model_dir


def llama_cpp_source() -> Path:
    return cache_dir("peers") / "llama.cpp-src" / "vendor" / "llama.cpp"


# llama.cpp's converter, its model class's set_vocab replaced by a copy of a GGUF file's tokenizer keys
_CONVERT_WITH_VOCAB = """
import sys
source, vocab, arch = sys.argv[1:4]
sys.path.insert(0, source)
sys.argv = ["convert_hf_to_gguf.py", *sys.argv[4:]]
import convert_hf_to_gguf
import gguf
from conversion import get_model_class

def set_vocab(self):
    for key, field in gguf.GGUFReader(vocab).fields.items():
        if key.startswith("tokenizer."):
            array = field.types[0] == gguf.GGUFValueType.ARRAY
            self.gguf_writer.add_key_value(key, field.contents(), field.types[0],
                                           sub_type=field.types[-1] if array else None)

get_model_class(arch, mmproj=False).set_vocab = set_vocab
convert_hf_to_gguf.main()
"""


def convert_f32(model_dir: Path, out: Path) -> Path:
    """llama.cpp's converter needs `architectures` in config.json: give it a patched copy."""
    staging = out.parent / "hf"
    staging.mkdir(exist_ok=True)
    for file in model_dir.iterdir():
        if file.name != "config.json":
            (staging / file.name).symlink_to(file.resolve())
    config = json.loads((model_dir / "config.json").read_text())
    config["architectures"] = hf_architectures(config)
    (staging / "config.json").write_text(json.dumps(config))
    args = [str(staging), "--outtype", "f32", "--outfile", str(out)]
    vocab = None if byte_level_bpe(model_dir) or (model_dir / "tokenizer.model").exists() else \
        model_source_gguf(model_dir)
    if vocab is None:
        command = [sys.executable, str(llama_cpp_source() / "convert_hf_to_gguf.py"), *args]
    else:
        command = [sys.executable, "-c", _CONVERT_WITH_VOCAB, str(llama_cpp_source()), str(vocab),
                   config["architectures"][0], *args]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"llama.cpp's converter failed: {done.stderr.strip()[-600:]}")
    return out


def imported_perplexity(gguf_file: Path, ids: torch.Tensor, ctx: int, chunks: int) -> float | None:
    """The same GGUF read into quantwise (codes kept) and evaluated by quantwise on llama.cpp's
    tokens and chunks: the peer's file measured by our evaluator."""
    from quantwise.checkpoint.importers import as_native

    try:
        model = quantwise.load(as_native(gguf_file), kernels=False)
    except ValueError as exc:
        print(f"{gguf_file.name}: not imported ({exc})")
        return None
    return chunked_perplexity(model, ids, ctx, chunks, bos_id=llama_cpp.perplexity_bos(gguf_file)).perplexity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--calib", default=str(cache_dir("text") / "austen" / "emma.txt"))
    parser.add_argument("--text", default=str(cache_dir("text") / "austen" / "prideprejudice.txt"))
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--imatrix-chunks", type=int, default=32, help="512-token chunks of --calib for llama-imatrix")
    parser.add_argument("--import-check", choices=("all", "quantwise", "none"), default="all",
                        help="which files quantwise also imports and evaluates on llama.cpp's tokens (quantwise: "
                             "only its own exports, the engine-vs-ours check; each costs a full evaluation)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    bins = llama_cpp.binaries()
    try:
        import sentencepiece  # noqa: F401 - llama.cpp's converter imports it before trying BPE
    except ImportError:
        raise SystemExit("llama.cpp's converter needs sentencepiece: pip install sentencepiece") from None
    env = {**os.environ, "LD_LIBRARY_PATH": str(bins)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        f32 = convert_f32(resolve_model_dir(args.model), tmp / "f32.gguf")
        files = {"llama.cpp F32 (converter)": f32}
        subprocess.run([str(bins / "llama-quantize"), str(f32), str(tmp / "q4_0.gguf"), "Q4_0"], check=True,
                       capture_output=True, env=env)
        files["llama-quantize Q4_0"] = tmp / "q4_0.gguf"
        subprocess.run([str(bins / "llama-imatrix"), "-m", str(f32), "-f", args.calib, "-o", str(tmp / "imatrix.gguf"),
                        "-c", "512", "--chunks", str(args.imatrix_chunks), "-t", str(os.cpu_count())], check=True,
                       capture_output=True, env=env)
        subprocess.run([str(bins / "llama-quantize"), "--imatrix", str(tmp / "imatrix.gguf"), str(f32),
                        str(tmp / "q4_0-imatrix.gguf"), "Q4_0"], check=True, capture_output=True, env=env)
        files["llama-quantize Q4_0 + imatrix (same calibration text)"] = tmp / "q4_0-imatrix.gguf"
        for spec in args.checkpoint:
            name, path = spec.split("=", 1)
            result = export(path, "gguf", tmp / name)
            files[f"quantwise {name} -> {','.join(result['tensor_types'])}"] = tmp / name / "model.gguf"
        ids = torch.tensor(llama_cpp.tokenize(f32, args.text))
        for label, file in files.items():
            ppl = llama_cpp.perplexity(file, args.text, args.ctx, args.chunks)
            check = args.import_check == "all" or (args.import_check == "quantwise" and label.startswith("quantwise"))
            rows.append({"model": label, "perplexity": ppl.perplexity, "bytes": file.stat().st_size,
                         "quantwise_import_perplexity": imported_perplexity(file, ids, args.ctx, args.chunks)
                         if check else None})
            print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["perplexity"]
    print(f"\nllama-perplexity, {args.ctx}-token context, {args.chunks} chunks of {Path(args.text).name}:\n")
    print("| GGUF | llama.cpp perplexity | vs F32 | MiB | quantwise eval of the same file (imported) |")
    print("|---|---|---|---|---|")
    for row in rows:
        ours = row["quantwise_import_perplexity"]
        print(f"| {row['model']} | {row['perplexity']:.3f} | {row['perplexity'] / base:.3f} | "
              f"{row['bytes'] / 2**20:.1f} | {'-' if ours is None else f'{ours:.3f}'} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
