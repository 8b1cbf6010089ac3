"""GGUF for llama.cpp (and ollama, LM Studio): our INT4 / INT8 codes transcoded into its blocks.

Sources: ggml-org/llama.cpp `ggml/src/ggml-common.h` (block layouts), `gguf-py/gguf/constants.py`
(names, keys), `convert_hf_to_gguf.py` (metadata, tokenizer, the Llama q/k row permutation).
What differs per architecture (names, keys, norm offsets, permutation) is in gguf_arch.py.
Blocks hold 32 values of one row:
- Q4_0: fp16 d, 16 bytes; byte j = nibble of value j | nibble of value j+16 << 4; x = d * (nibble - 8).
  Symmetric INT4 with any group size that is a multiple of 32 lands on it exactly (each block
  repeats its group's scale; our codes are already q + 8), ragged last groups included.
- Q4_1: fp16 d, fp16 m, the same nibbles; x = d * nibble + m. Asymmetric INT4: d = s, m = -s * z,
  m rounded to fp16 (the one inexact step: at most half an fp16 ulp of s * z).
- Q8_0: fp16 d, 32 int8; x = d * q. Symmetric INT8 per channel or in groups of 32k.
K-quants (256 values per row in a super-block; layouts in gguf_kquants.py):
- Q6_K and Q4_K from codes already on their grid (a checkpoint imported from Q6_K / Q4_K: INT6 g16
  and AFFINE4 g32 whose float32 scales factor as fp16 d times small integers): the same blocks, exact.
- `--gguf-type q4_k|q6_k`: every linear whose input width is a multiple of 256 becomes that type,
  transcoded exactly where its codes fit the grid, otherwise its dequantized float weights are
  quantized into the super-blocks (least-squares scale and min per sub-block, then 6-bit / int8
  sub-scales against the fp16 super-block d). Narrower rows cannot be K-quants; like llama-quantize,
  they fall back to the block type above that holds their codes, and the result lists them.
AFFINE4 with fp16 scales in groups of 32k is Q4_1 exactly (d = scale, m = offset).
Token embeddings and the output projection stay float in a quantwise checkpoint; the export stores
them as llama-quantize does for a quantized file (`llama_tensor_get_type` in llama-quant.cpp): the
output, or a tied token embedding that serves as it, Q6_K where its rows are whole super-blocks and
Q8_0 otherwise; an untied token embedding Q8_0 (llama-quantize gives it the file's base type, e.g.
Q4_0: a lookup costs no compute, so the 8-bit copy keeps it near lossless for a few MB). Left in
F32 (SmolLM2's 576 x 49152, Gemma-3's 640 x 262144), they made our files 1.9x and 3.0x the size of
llama-quantize's. `gguf_embeddings="f32"` keeps them float (exact comparisons).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import torch

from ...data import read_rows
from ...formats import FormatKind, affine
from ...runtime.qlinear import QuantizedLinear
from ..native import NativeCheckpoint
from .base import ExportError, ExportOptions, int_weight
from .gguf_arch import REST_NAMES, GGUFArch, arch_for, common_hparams
from .gguf_kquants import QK, kquant_blocks, kquant_float, q4_k_transcode, q6_k_transcode

NAME = "gguf"
ENGINES = "llama.cpp, ollama, LM Studio, transformers (GGUF loader)"
BLOCK = 32
KQUANTS = ("Q4_K", "Q6_K")

def _block_scales(scales: torch.Tensor, group: int, cols: int) -> torch.Tensor:
    """(rows, groups) scales -> (rows, cols/32) one per 32-value block."""
    starts = torch.arange(0, cols, BLOCK)
    return scales[:, starts // group]


def q4_blocks(codes: torch.Tensor, d: torch.Tensor, m: torch.Tensor | None = None) -> np.ndarray:
    """Unsigned 4-bit codes (rows, cols) and per-block d (and m for Q4_1) -> (rows, bytes) uint8."""
    rows, cols = codes.shape
    nb = cols // BLOCK
    q = codes.to(torch.uint8).reshape(rows, nb, BLOCK)
    nibbles = (q[:, :, :16] | (q[:, :, 16:] << 4)).numpy()
    parts = [d.to(torch.float16).numpy().reshape(rows, nb, 1).view(np.uint8)]
    if m is not None:
        parts.append(m.to(torch.float16).numpy().reshape(rows, nb, 1).view(np.uint8))
    parts.append(nibbles)
    return np.concatenate(parts, axis=2).reshape(rows, -1)


def q8_0_blocks(signed: torch.Tensor, d: torch.Tensor) -> np.ndarray:
    rows, cols = signed.shape
    nb = cols // BLOCK
    values = signed.to(torch.int8).reshape(rows, nb, BLOCK).numpy().view(np.uint8)
    scale = d.to(torch.float16).numpy().reshape(rows, nb, 1).view(np.uint8)
    return np.concatenate([scale, values], axis=2).reshape(rows, -1)


def permute_qk(rows: np.ndarray | torch.Tensor, heads: int) -> np.ndarray | torch.Tensor:
    """llama.cpp's rotary layout: each head's two halves interleaved (convert_hf_to_gguf's permute)."""
    shape = rows.shape
    split = rows.reshape(heads, 2, shape[0] // heads // 2, *shape[1:])
    return split.swapaxes(1, 2).reshape(shape)


def _quantized_tensor(name: str, module: QuantizedLinear, kquant: str | None = None) -> tuple[np.ndarray, object]:
    """GGUF blocks for one linear: with `kquant` (Q4_K / Q6_K) where its rows are whole super-blocks,
    else the block type that holds its codes exactly."""
    import gguf

    spec = module.weight_q.spec
    if module.act_spec is not None:
        raise ExportError(f"{name}: llama.cpp has no W8A8 path for {spec.name} with quantized activations; export a "
                          "weight-only checkpoint")
    if kquant and module.in_features % QK == 0:
        return kquant_blocks(module, kquant)[0], gguf.GGMLQuantizationType[kquant]
    exact = _exact_kquant(module)
    if exact is not None:
        return exact
    if spec.kind is FormatKind.AFFINE:
        return _affine_q4_1(name, module)
    if spec.kind is not FormatKind.INT or spec.bits not in (4, 8):
        raise ExportError(f"{name}: GGUF export transcodes INT4 and INT8 codes (and Q4_K / Q6_K-shaped ones), not "
                          f"{spec.name}; choose a K-quant with --gguf-type q4_k or q6_k to re-quantize it")
    w = int_weight(module, name)
    cols = module.in_features
    if cols % BLOCK or (w.group_size % BLOCK and w.group_size != cols):
        raise ExportError(f"{name}: GGUF blocks hold 32 values of one row; input width {cols} with group "
                          f"{w.group_size} does not split into them (use a group size that is a multiple of 32)")
    scales = _block_scales(w.scales, w.group_size, cols)
    if spec.bits == 8:
        if not spec.symmetric:
            raise ExportError(f"{name}: Q8_0 is symmetric; re-quantize with int8-channel")
        return q8_0_blocks(w.codes - 128, scales), gguf.GGMLQuantizationType.Q8_0
    if spec.symmetric:
        return q4_blocks(w.codes, scales), gguf.GGMLQuantizationType.Q4_0
    zeros = _block_scales(w.zeros.float(), w.group_size, cols)
    return q4_blocks(w.codes, scales, -scales * zeros), gguf.GGMLQuantizationType.Q4_1


def _exact_kquant(module: QuantizedLinear) -> tuple[np.ndarray, object] | None:
    """INT6 g16 and fp32-scaled AFFINE4 whose scales sit on a K-quant grid (imported from GGUF): the
    same blocks back."""
    import gguf

    spec = module.weight_q.spec
    if module.in_features % QK:
        return None
    if spec.kind is FormatKind.INT and spec.bits == 6:
        blocks = q6_k_transcode(module)
        return None if blocks is None else (blocks, gguf.GGMLQuantizationType.Q6_K)
    if spec.kind is FormatKind.AFFINE and spec.bits == 4 and spec.scale_dtype_name == "float32":
        blocks = q4_k_transcode(module)
        return None if blocks is None else (blocks, gguf.GGMLQuantizationType.Q4_K)
    return None


def _affine_q4_1(name: str, module: QuantizedLinear) -> tuple[np.ndarray, object]:
    """AFFINE4 with fp16 scales and offsets in groups of 32k: Q4_1 exactly (d = scale, m = offset)."""
    import gguf

    qt, cols = module.weight_q, module.in_features
    spec = qt.spec
    if spec.bits != 4 or spec.scale_dtype_name != "float16" or cols % BLOCK or spec.group_size % BLOCK \
            or module.perm is not None:
        raise ExportError(f"{name}: {spec.name} ({spec.scale_dtype_name} scales) is Q4_1 only with 4 bits, fp16 "
                          "scales and groups of 32k; choose --gguf-type q4_k to re-quantize it")
    scales = _block_scales(qt.scales.float(), spec.group_size, cols)
    offsets = _block_scales(qt.offsets.float(), spec.group_size, cols)
    return q4_blocks(affine.codes(qt), scales, offsets), gguf.GGMLQuantizationType.Q4_1


def pretokenizer(model_dir: Path, override: str | None = None) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer, looked up by a fingerprint of it."""
    if override:
        return override
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    fingerprint = hashlib.sha256(json.dumps(tokenizer.get("pre_tokenizer"), sort_keys=True).encode()).hexdigest()[:16]
    for row in read_rows("gguf_pretokenizers.csv"):
        if row["fingerprint"] == fingerprint:
            return row["pre"]
    raise ExportError(f"{model_dir}: pre-tokenizer {fingerprint} is not in quantwise/data/gguf_pretokenizers.csv; "
                      "name llama.cpp's pre-tokenizer for it with --gguf-pre (see convert_hf_to_gguf.py)")


def _add_tokenizer(writer, model_dir: Path, vocab_size: int, pre: str) -> None:
    """GPT-2 style BPE vocabulary as convert_hf_to_gguf writes it: tokens by id, added tokens typed
    CONTROL (special) or USER_DEFINED, merges, special token ids and the chat template."""
    import gguf

    tokenizer = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    model = tokenizer["model"]
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise ExportError(f"{model_dir}: GGUF export writes byte-level BPE tokenizers; this one is {model.get('type')}")
    by_id = {index: token for token, index in model["vocab"].items()}
    added = {item["id"]: item for item in tokenizer.get("added_tokens", [])}
    by_id.update({index: item["content"] for index, item in added.items()})
    tokens, types = [], []
    for index in range(vocab_size):
        if index not in by_id:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(by_id[index])
        if index in added:
            types.append(gguf.TokenType.CONTROL if added[index].get("special") else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=bool(model.get("merges")), n_vocab=vocab_size)
    if not special.merges:  # a pure byte-level vocabulary (test models): transformers reads it, llama.cpp does not
        writer.add_token_merges([])
        writer.add_token_scores([0.0] * vocab_size)  # transformers rebuilds merges from scores when there are none
    special.add_to_gguf(writer, quiet=True)


def byte_level_bpe(model_dir: Path) -> bool:
    """A GPT-2 style tokenizer.json, which _add_tokenizer rebuilds the way the converter does."""
    file = model_dir / "tokenizer.json"
    if not file.exists():
        return False
    model = json.loads(file.read_text(encoding="utf-8"))["model"]
    return model.get("type") == "BPE" and not model.get("byte_fallback")


def model_source_gguf(model_dir: Path) -> Path | None:
    """The GGUF file quantwise dequantized `model_dir` from, when it did and the file is still there."""
    from safetensors import safe_open

    from ...cache import cache_dir

    for file in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            meta = handle.metadata() or {}
        # source_path: conversions since it was recorded; a bare name: where `data fetch` puts its files
        for candidate in (meta.get("source_path"), meta.get("source") and cache_dir("gguf") / meta["source"]):
            if candidate and Path(candidate).is_file():
                return Path(candidate)
    return None


def source_gguf(ckpt: NativeCheckpoint) -> Path | None:
    """The GGUF file the checkpoint's model was dequantized from (`quantwise data fetch`, or a .gguf
    given to `quantize`), if it is still there."""
    from ...models.source import resolve_model_dir

    source = Path(ckpt.manifest.source_model or "")
    if source.suffix == ".gguf":
        return source if source.is_file() else None
    try:
        return model_source_gguf(resolve_model_dir(ckpt.manifest.source_model))
    except (FileNotFoundError, ValueError):
        return None


def vocab_source(ckpt: NativeCheckpoint, options: ExportOptions, arch: GGUFArch) -> tuple[str, Path | None]:
    """Where the GGUF vocabulary comes from, the converter's order where it has one:
    ("gguf", file) copied from a GGUF file (--gguf-vocab), ("bpe", None) rebuilt from a byte-level
    tokenizer.json, ("sentencepiece", tokenizer.model) for architectures whose converter reads it,
    else ("gguf", file) from the GGUF the model was dequantized from: SentencePiece-style
    vocabularies keep per-token scores and types that tokenizer.json does not hold."""
    if options.gguf_vocab:
        file = Path(options.gguf_vocab)
        if not file.is_file():
            raise ExportError(f"--gguf-vocab {file}: no such file")
        return "gguf", file
    if byte_level_bpe(ckpt.path):
        return "bpe", None
    if arch.spm_add_space_prefix is not None and (ckpt.path / "tokenizer.model").is_file():
        return "sentencepiece", ckpt.path / "tokenizer.model"
    file = source_gguf(ckpt)
    if file is None:
        raise ExportError(f"{ckpt.path}: its tokenizer is neither byte-level BPE nor a tokenizer.model the {arch.name} "
                          "entry reads, and no source GGUF was found to copy it from; name one with --gguf-vocab FILE")
    return "gguf", file


def does_token_look_special(token: str) -> bool:
    """Added tokens some models leave unmarked that the converter types CONTROL (Gemma's <mask>,
    <unusedN>, <|...|> chat tokens)."""
    wrapped = any(token.startswith(left) and token.endswith(right)
                  for left, right in (("<|", "|>"), ("<\uff5c", "\uff5c>"), ("<unused", ">")))
    return wrapped or token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")


def sentencepiece_vocab(model_dir: Path, vocab_size: int) -> tuple[list[bytes], list[float], list[int]]:
    """Tokens, scores and types from tokenizer.model, then added_tokens.json and tokenizer_config's
    added_tokens_decoder over them, as the converter's _create_vocab_sentencepiece builds them."""
    import gguf
    from sentencepiece import SentencePieceProcessor

    processor = SentencePieceProcessor()
    processor.LoadFromFile(str(model_dir / "tokenizer.model"))
    kind = gguf.TokenType
    tokens = [f"[PAD{i}]".encode() for i in range(vocab_size)]
    scores, types = [-10000.0] * vocab_size, [kind.UNUSED] * vocab_size
    for index in range(min(processor.vocab_size(), vocab_size)):
        tokens[index], scores[index] = processor.IdToPiece(index).encode(), processor.GetScore(index)
        types[index] = (kind.UNKNOWN if processor.IsUnknown(index) else kind.CONTROL if processor.IsControl(index)
                        else kind.UNUSED if processor.IsUnused(index) else kind.BYTE if processor.IsByte(index)
                        else kind.NORMAL)
    added_file, config_file = model_dir / "added_tokens.json", model_dir / "tokenizer_config.json"
    added = json.loads(added_file.read_text(encoding="utf-8")) if added_file.is_file() else {}
    for token, index in added.items():
        if index < vocab_size:
            tokens[index], scores[index], types[index] = token.encode(), -1000.0, kind.USER_DEFINED
    decoder = json.loads(config_file.read_text(encoding="utf-8")).get("added_tokens_decoder", {}) \
        if config_file.is_file() else {}
    for key, item in decoder.items():
        index, token = int(key), item["content"]
        if index >= vocab_size:
            continue
        if item.get("special") or does_token_look_special(token):
            types[index] = kind.CONTROL
        else:
            token = token.replace("\u2581", " ")  # user-defined pieces carry spaces, not SentencePiece's marks
            types[index] = kind.USER_DEFINED
        tokens[index], scores[index] = token.encode(), -1000.0
    return tokens, scores, [int(t) for t in types]


def _add_sentencepiece_tokenizer(writer, model_dir: Path, vocab_size: int, arch: GGUFArch) -> None:
    import gguf

    tokens, scores, types = sentencepiece_vocab(model_dir, vocab_size)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    gguf.SpecialVocab(model_dir, n_vocab=len(tokens)).add_to_gguf(writer, quiet=True)
    writer.add_add_space_prefix(arch.spm_add_space_prefix)


def _gguf_tokenizer_fields(file: Path, config: dict) -> list[tuple[str, object, object, object]]:
    """Every tokenizer.* key of `file` as (key, value, type, element type), checked against the config."""
    import gguf

    from ...models.gguf_file import GGUFFileError, open_gguf

    try:
        reader = open_gguf(file)
    except GGUFFileError as exc:
        raise ExportError(str(exc)) from None
    fields = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer."):
            array = field.types[0] == gguf.GGUFValueType.ARRAY
            fields[key] = (key, field.contents(), field.types[0], field.types[-1] if array else None)
    tokens = fields.get(gguf.Keys.Tokenizer.LIST)
    if tokens is None or len(tokens[1]) != config["vocab_size"]:
        found = "no" if tokens is None else len(tokens[1])
        raise ExportError(f"{file}: {found} tokens, but the model's embedding has {config['vocab_size']} rows; "
                          "not this model's vocabulary")
    for key, name in ((gguf.Keys.Tokenizer.BOS_ID, "bos_token_id"), (gguf.Keys.Tokenizer.EOS_ID, "eos_token_id")):
        if key in fields and isinstance(config.get(name), int) and fields[key][1] != config[name]:
            raise ExportError(f"{file}: {key} is {fields[key][1]}, the model's {name} {config[name]}; "
                              "not this model's vocabulary")
    return list(fields.values())


def _copy_tokenizer(writer, file: Path, config: dict) -> None:
    for key, value, kind, element in _gguf_tokenizer_fields(file, config):
        writer.add_key_value(key, value, kind, sub_type=element)


def check(ckpt: NativeCheckpoint, options: ExportOptions) -> GGUFArch:
    config = ckpt.config()
    arch = arch_for(config)
    arch.check(config)
    kind, file = vocab_source(ckpt, options, arch)
    if kind == "bpe":
        pretokenizer(ckpt.path, options.gguf_pre)
    elif kind == "gguf":
        _gguf_tokenizer_fields(file, config)  # the wrong file is refused before writing
    elif importlib.util.find_spec("sentencepiece") is None:
        raise ExportError(f"{file} is read with the sentencepiece package: pip install sentencepiece")
    return arch


def _hparams(config: dict, arch: GGUFArch) -> dict[str, object]:
    return {**common_hparams(config), **arch.hparams(config)}


def write(ckpt: NativeCheckpoint, out: Path, options: ExportOptions) -> dict:
    import gguf

    config = ckpt.config()
    arch = check(ckpt, options)
    kquant = _kquant_option(options)
    embeddings_as_stored = _embedding_option(options)
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    file = out / "model.gguf"
    writer = gguf.GGUFWriter(str(file), arch.name)
    writer.add_name(str(config.get("_model_name_or_path") or ckpt.manifest.source_model))
    for method, value in _hparams(config, arch).items():
        getattr(writer, method)(value)
    kinds = set()

    def add(name: str, values, raw_dtype=None) -> None:
        if raw_dtype is None:
            values = values.float()
            if name.endswith("norm.weight") and arch.norm_offset:
                values = values + arch.norm_offset
            writer.add_tensor(name, np.ascontiguousarray(values.numpy()))
        else:
            writer.add_tensor(name, np.ascontiguousarray(values), raw_dtype=raw_dtype)
            kinds.add(raw_dtype)

    fallback = []

    def blocks_of(full: str, module: QuantizedLinear):
        data, kind = _quantized_tensor(full, module, kquant)
        if kquant and kind.name != kquant:
            fallback.append(f"{full}: {kind.name} (input width {module.in_features} is not a multiple of {QK})")
        return data, kind

    rest, head = ckpt.rest()
    tied = head is None and "lm_head.weight" not in rest
    embedding_types = {}
    for hf_name, gguf_name in REST_NAMES.items():
        if hf_name not in rest:
            continue
        as_output = gguf_name == "output.weight" or (gguf_name == "token_embd.weight" and tied)
        stored = _embedding_blocks(rest[hf_name], as_output) if embeddings_as_stored else None
        if stored is None:
            add(gguf_name, rest[hf_name])
        else:
            writer.add_tensor(gguf_name, stored[0], raw_dtype=stored[1])
            embedding_types[gguf_name] = stored[1].name
    if head is not None:
        add("output.weight", *blocks_of("lm_head", head))

    def add_linear(index: int, name: str, data, kind=None) -> None:
        if arch.permute_qk and name.endswith("q_proj"):
            data = permute_qk(data, heads)
        elif arch.permute_qk and name.endswith("k_proj"):
            data = permute_qk(data, kv_heads)
        add(f"blk.{index}.{arch.block_names[name]}.weight", data, kind)

    for block in ckpt.blocks():
        for name, tensor in block.tensors.items():
            linear = name.removesuffix(".weight")
            if name not in arch.block_names and linear in arch.block_names:  # a linear kept in float (GGUF imports)
                if kquant and tensor.shape[-1] % QK == 0:
                    add_linear(block.index, linear, kquant_float(tensor, kquant), gguf.GGMLQuantizationType[kquant])
                else:
                    add_linear(block.index, linear, tensor)
                continue
            if name not in arch.block_names:
                raise ExportError(f"{ckpt.manifest.full_name(block.index, name)}: no GGUF name for this tensor")
            add(f"blk.{block.index}.{arch.block_names[name]}", tensor)
        for name, module in block.linears.items():  # a layer GGUF cannot hold is refused here, in staging
            full = ckpt.manifest.full_name(block.index, name)
            if name not in arch.block_names:
                raise ExportError(f"{full}: no GGUF name for this layer")
            add_linear(block.index, name, *blocks_of(full, module))
    file_types = {gguf.GGMLQuantizationType.Q4_0: gguf.LlamaFileType.MOSTLY_Q4_0,
                  gguf.GGMLQuantizationType.Q4_1: gguf.LlamaFileType.MOSTLY_Q4_1,
                  gguf.GGMLQuantizationType.Q8_0: gguf.LlamaFileType.MOSTLY_Q8_0,
                  gguf.GGMLQuantizationType.Q4_K: gguf.LlamaFileType.MOSTLY_Q4_K_M,
                  gguf.GGMLQuantizationType.Q6_K: gguf.LlamaFileType.MOSTLY_Q6_K}
    writer.add_file_type(file_types[min(kinds, key=lambda k: k.value)] if kinds else gguf.LlamaFileType.ALL_F32)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    kind, vocab = vocab_source(ckpt, options, arch)
    if kind == "bpe":
        _add_tokenizer(writer, ckpt.path, config["vocab_size"], pretokenizer(ckpt.path, options.gguf_pre))
    elif kind == "sentencepiece":
        _add_sentencepiece_tokenizer(writer, ckpt.path, config["vocab_size"], arch)
    else:
        _copy_tokenizer(writer, vocab, config)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    result = {"file": file.name, "bytes": file.stat().st_size, "tensor_types": sorted(k.name for k in kinds),
              "embedding_types": embedding_types, "vocabulary": str(vocab) if kind == "gguf" else kind}
    return {**result, "kquant_fallback": fallback} if kquant else result


EMBEDDING_CHOICES = ("auto", "f32")


def _embedding_option(options: ExportOptions) -> bool:
    """True: store token embeddings and output as llama-quantize does; False: keep them F32."""
    if options.gguf_embeddings not in EMBEDDING_CHOICES:
        raise ExportError(f"GGUF embeddings {options.gguf_embeddings!r}: choose one of "
                          f"{', '.join(EMBEDDING_CHOICES)}")
    return options.gguf_embeddings == "auto"


def _embedding_blocks(values: torch.Tensor, as_output: bool):
    """(blocks, type) for a token embedding or output matrix (rows = vocabulary), or None to keep
    it F32 (not a matrix, or rows that are not whole 32-value blocks)."""
    import gguf

    if values.dim() != 2 or values.shape[1] % BLOCK:
        return None
    if as_output and values.shape[1] % QK == 0:
        return kquant_float(values.float(), "Q6_K"), gguf.GGMLQuantizationType.Q6_K
    kind = gguf.GGMLQuantizationType.Q8_0
    # gguf-py's quantizer is ggml's reference Q8_0 (d = absmax / 127, codes rounded)
    return gguf.quants.quantize(np.ascontiguousarray(values.float().numpy()), kind), kind


def _kquant_option(options: ExportOptions) -> str | None:
    if options.gguf_type is None:
        return None
    kind = options.gguf_type.upper()
    if kind not in KQUANTS:
        raise ExportError(f"--gguf-type {options.gguf_type}: choose one of {', '.join(k.lower() for k in KQUANTS)}")
    return kind
