"""Gemma-3 in GGUF, read back by gguf's reader and dequantizer and by transformers' GGUF loader,
with negative controls: the norm +1 offset left out must change the logits, and configs llama.cpp
would run wrongly must be refused before anything is written."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

import quantwise
from quantwise.calibration import CalibrationConfig
from quantwise.checkpoint.exporters import ExportError, ExportOptions, export, gguf_arch
from quantwise.methods import build_method
from quantwise.pipeline.sequential import QuantizeJob, run_quantize
from quantwise.runtime import QuantizedLinear

pytest.importorskip("gguf")
IDS = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))
LAYERS = 6  # llama.cpp's and transformers' default Gemma-3 pattern: 5 sliding blocks, then 1 full


def _tiny_gemma3(path, **overrides):
    """A random Gemma-3 whose every setting survives a GGUF round trip through transformers' reader,
    which keeps its own defaults for what the file does not carry (query_pre_attn_scalar 256, the
    6-block pattern): head_dim 256 makes llama.cpp's 1/sqrt(head_dim) query scale the model's."""
    from transformers import AutoModelForCausalLM, Gemma3TextConfig

    from quantwise.models.tokenizer import byte_level_tokenizer

    torch.manual_seed(0)
    settings = dict(hidden_size=64, intermediate_size=96, num_attention_heads=2, num_key_value_heads=1,
                    head_dim=256, num_hidden_layers=LAYERS, vocab_size=256, max_position_embeddings=256,
                    sliding_window=8, query_pre_attn_scalar=256)
    overrides = {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()}  # tuples: fixture keys
    model = AutoModelForCausalLM.from_config(Gemma3TextConfig(**{**settings, **overrides}))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0.0, 0.2)  # Gemma stores w of x * (1 + w): zero-centred
    model.save_pretrained(path)
    byte_level_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def gemma3(tmp_path_factory, calib_text):
    made = {}

    def make(fmt: str, **overrides):
        key = (fmt, tuple(sorted(overrides.items())))
        if key not in made:
            root = tmp_path_factory.mktemp("gemma3")
            model = _tiny_gemma3(root / "model", **overrides)
            run_quantize(QuantizeJob(str(model), "rtn", build_method("rtn", fmt),
                                     CalibrationConfig((str(calib_text),), samples=2, seq_len=32, seed=1), root / "q"))
            made[key] = root / "q"
        return made[key]
    return make


def _read(path):
    import gguf

    reader = gguf.GGUFReader(str(path))
    tensors = {t.name: (t.tensor_type.name, gguf.quants.dequantize(t.data, t.tensor_type)) for t in reader.tensors}
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    return tensors, fields


@pytest.mark.parametrize("fmt,kind", [("int4-g32", "Q4_0"), ("int8-channel", "Q8_0")])
def test_gemma3_names_norm_offset_and_codes(gemma3, fmt, kind, tmp_path):
    """The converter's names and keys; norms stored as 1 + w; q/k rows as Hugging Face orders them."""
    ckpt = gemma3(fmt)
    export(ckpt, "gguf", tmp_path / "g")
    tensors, fields = _read(tmp_path / "g" / "model.gguf")
    assert fields["general.architecture"] == "gemma3"
    assert fields["gemma3.attention.sliding_window"] == 8
    assert fields["gemma3.rope.freq_base"] == 1_000_000.0 and fields["gemma3.rope.freq_base_swa"] == 10_000.0
    assert "gemma3.attention.sliding_window_pattern" not in fields  # the default pattern, as the converter
    assert "gemma3.rope.dimension_count" not in fields
    per_block = {"attn_norm", "attn_q_norm", "attn_k_norm", "post_attention_norm", "ffn_norm", "post_ffw_norm",
                 "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"}
    want_names = {"token_embd.weight", "output_norm.weight"} | {
        f"blk.{i}.{n}.weight" for i in range(LAYERS) for n in per_block}
    assert set(tensors) == want_names  # tied embeddings: no output.weight, as the converter writes it
    model = quantwise.load(ckpt, kernels=False)
    checked = 0
    for name, module in model.named_modules():
        if isinstance(module, QuantizedLinear):
            parts = name.split(".")
            kind_read, values = tensors[f"blk.{parts[2]}.{gguf_arch.GEMMA3_BLOCK_NAMES['.'.join(parts[3:])]}.weight"]
            assert kind_read == kind and np.array_equal(values, module.dense_weight().numpy())
            checked += 1
    assert checked == LAYERS * 7
    state = model.state_dict()
    for hf_name, gguf_name in gguf_arch.GEMMA3_BLOCK_NAMES.items():
        if hf_name.endswith("norm.weight"):
            assert np.array_equal(tensors[f"blk.1.{gguf_name}"][1], state[f"model.layers.1.{hf_name}"].float().numpy()
                                  + np.float32(1))
    assert np.array_equal(tensors["output_norm.weight"][1], state["model.norm.weight"].float().numpy() + 1)


def test_gemma3_loads_in_transformers_and_needs_the_norm_offset(gemma3, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    def logits_of(path):
        model = AutoModelForCausalLM.from_pretrained(str(path), gguf_file="model.gguf", dtype=torch.float32).eval()
        with torch.no_grad():
            return model(IDS).logits

    ckpt = gemma3("int4-g32")
    with torch.no_grad():
        ours = quantwise.load(ckpt, kernels=False)(IDS).logits.float()
    f32 = ExportOptions(gguf_embeddings="f32")  # exact: the embeddings as our checkpoint holds them
    export(ckpt, "gguf", tmp_path / "g", f32)
    theirs = logits_of(tmp_path / "g")
    assert float((theirs - ours).abs().max() / ours.abs().max()) < 1e-5
    monkeypatch.setitem(gguf_arch.ARCHES, "gemma3", dataclasses.replace(gguf_arch.ARCHES["gemma3"], norm_offset=0.0))
    export(ckpt, "gguf", tmp_path / "no-offset", f32)  # negative control
    assert float((logits_of(tmp_path / "no-offset") - ours).abs().max() / ours.abs().max()) > 1e-2


def test_gemma3_layer_pattern_written_when_not_llama_cpps_default(gemma3, tmp_path):
    types = ["full_attention", "sliding_attention"] * (LAYERS // 2)
    export(gemma3("int8-channel", layer_types=tuple(types)), "gguf", tmp_path / "g")
    _, fields = _read(tmp_path / "g" / "model.gguf")
    assert fields["gemma3.attention.sliding_window_pattern"] == [t == "sliding_attention" for t in types]


def test_gemma3_refusals(gemma3, tmp_path):
    with pytest.raises(ExportError, match="query_pre_attn_scalar"):  # llama.cpp hard-codes 1/sqrt(head_dim)
        export(gemma3("int8-channel", query_pre_attn_scalar=64), "gguf", tmp_path / "a")
    assert not (tmp_path / "a").exists()
    with pytest.raises(ExportError, match="soft-capping"):
        export(gemma3("int8-channel", attn_logit_softcapping=50.0), "gguf", tmp_path / "b")


def test_sentencepiece_vocabulary_is_copied_from_its_gguf(gemma3, tmp_path):
    """A vocabulary tokenizer.json cannot rebuild is copied, key for key, from the GGUF it came from;
    without one, or from a file of another vocabulary size, the export is refused."""
    ckpt = gemma3("int8-channel")
    export(ckpt, "gguf", tmp_path / "source")
    source = tmp_path / "source" / "model.gguf"
    spm = tmp_path / "spm"
    shutil.copytree(ckpt, spm)
    tokenizer = json.loads((ckpt / "tokenizer.json").read_text())
    tokenizer["model"]["byte_fallback"] = True  # Gemma's kind: BPE over SentencePiece pieces
    (spm / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(ExportError, match="--gguf-vocab"):
        export(spm, "gguf", tmp_path / "refused")
    export(spm, "gguf", tmp_path / "copied", ExportOptions(gguf_vocab=str(source)))
    _, want = _read(source)
    _, got = _read(tmp_path / "copied" / "model.gguf")
    assert {k: v for k, v in got.items() if k.startswith("tokenizer.")} == \
        {k: v for k, v in want.items() if k.startswith("tokenizer.")}
    other = gemma3("int8-channel", vocab_size=320)
    export(other, "gguf", tmp_path / "other")
    with pytest.raises(ExportError, match="320 tokens"):
        export(spm, "gguf", tmp_path / "wrong", ExportOptions(gguf_vocab=str(tmp_path / "other" / "model.gguf")))


def test_sliding_layer_patterns():
    assert gguf_arch.default_sliding_layers(7) == [True] * 5 + [False, True]
    assert gguf_arch.gemma3_sliding_layers({"num_hidden_layers": 7, "sliding_window_pattern": 6}) == \
        gguf_arch.default_sliding_layers(7)
    with pytest.raises(ExportError, match="not mapped"):
        gguf_arch.arch_for({"model_type": "qwen3"})


def test_sentencepiece_vocabulary_built_from_tokenizer_model(gemma3, calib_text, tmp_path):
    """With a tokenizer.model (a Hugging Face download), the vocabulary is built from it as the
    converter does: pieces, scores and types as SentencePiece reports them, space prefix off; the
    tokenizer transformers builds from the file splits text as SentencePiece itself does."""
    spm = pytest.importorskip("sentencepiece")
    import gguf
    from transformers import AutoTokenizer

    ckpt = tmp_path / "ckpt"
    shutil.copytree(gemma3("int8-channel", vocab_size=320), ckpt)
    lines = tmp_path / "lines.txt"  # SentencePiece drops sentences over 4192 characters
    lines.write_text(calib_text.read_text(encoding="utf-8").replace(". ", ".\n"), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(lines), model_prefix=str(tmp_path / "sp"), vocab_size=320,
                                   model_type="bpe", byte_fallback=True, pad_id=0, eos_id=1, bos_id=2, unk_id=3,
                                   add_dummy_prefix=False, minloglevel=2)  # as Gemma's
    (ckpt / "tokenizer.model").write_bytes((tmp_path / "sp.model").read_bytes())
    tokenizer = json.loads((ckpt / "tokenizer.json").read_text())
    tokenizer["model"]["byte_fallback"] = True  # not byte-level BPE: the converter reads tokenizer.model
    (ckpt / "tokenizer.json").write_text(json.dumps(tokenizer))
    export(ckpt, "gguf", tmp_path / "g")
    _, fields = _read(tmp_path / "g" / "model.gguf")
    processor = spm.SentencePieceProcessor(model_file=str(tmp_path / "sp.model"))
    assert fields["tokenizer.ggml.model"] == "llama" and fields["tokenizer.ggml.add_space_prefix"] is False
    assert fields["tokenizer.ggml.tokens"] == [processor.IdToPiece(i) for i in range(320)]
    assert fields["tokenizer.ggml.scores"] == pytest.approx([processor.GetScore(i) for i in range(320)])
    types = fields["tokenizer.ggml.token_type"]
    assert types[0] == gguf.TokenType.CONTROL and types[3] == gguf.TokenType.UNKNOWN
    assert sum(t == gguf.TokenType.BYTE for t in types) == 256
    theirs = AutoTokenizer.from_pretrained(str(tmp_path / "g"), gguf_file="model.gguf")
    sample = "It is a truth universally acknowledged"
    assert theirs(sample, add_special_tokens=False)["input_ids"] == processor.encode(sample)


def test_gemma3_gguf_imported_back(gemma3, tmp_path):
    """quantwise's GGUF importer reads gemma3 files through the same table: every linear's codes
    back as they were, norms with the +1 taken off again (float32 rounding of 1 + w aside)."""
    from quantwise.checkpoint.importers import import_checkpoint

    ckpt = gemma3("int4-g32")
    export(ckpt, "gguf", tmp_path / "g", ExportOptions(gguf_embeddings="f32"))
    back = quantwise.load(import_checkpoint(tmp_path / "g" / "model.gguf", tmp_path / "back"), kernels=False)
    ours = quantwise.load(ckpt, kernels=False)
    mine = {n: m for n, m in ours.named_modules() if isinstance(m, QuantizedLinear)}
    theirs = {n: m for n, m in back.named_modules() if isinstance(m, QuantizedLinear)}
    assert mine.keys() == theirs.keys() and len(mine) == LAYERS * 7
    for name, module in mine.items():
        assert torch.equal(theirs[name].dense_weight(), module.dense_weight()), name
    norm = "model.layers.0.post_feedforward_layernorm.weight"
    assert torch.allclose(back.state_dict()[norm], ours.state_dict()[norm].float(), rtol=0, atol=1e-7)
    with torch.no_grad():
        want = ours(IDS).logits.float()
        assert float((back(IDS).logits.float() - want).abs().max() / want.abs().max()) < 1e-5


def test_gemma3_keys_from_a_transformers_4_config():
    """Older configs keep the global rope (with Gemma-3 4B's linear x8 scaling) at the top level and
    the sliding layers' base in rope_local_base_freq: the same keys come out."""
    import gguf

    config = {"num_hidden_layers": 34, "hidden_size": 2560, "num_attention_heads": 8, "head_dim": 256,
              "query_pre_attn_scalar": 256, "rope_theta": 1e6, "rope_local_base_freq": 1e4,
              "rope_scaling": {"rope_type": "linear", "factor": 8.0}, "sliding_window": 1024,
              "sliding_window_pattern": 6}
    gemma = gguf_arch.ARCHES["gemma3"]
    gemma.check(config)
    assert gemma.hparams(config) == {"add_rope_freq_base": 1e6, "add_rope_freq_base_swa": 1e4,
                                     "add_rope_scaling_type": gguf.RopeScalingType.LINEAR,
                                     "add_rope_scaling_factor": 8.0, "add_sliding_window": 1024}
