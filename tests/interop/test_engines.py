"""Exports of a real model (SmolLM2-135M, `quantwise data fetch`) loaded and run by the engines'
own code: llama.cpp's llama-perplexity and vLLM's loader and CPU kernels. Each comparison has a
negative control (the same export with one layout rule broken) that the engine must expose.
Engines come from `bash scripts/peers.sh llama.cpp` / `vllm`; missing ones skip."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

import quantwise
from quantwise.calibration import CalibrationConfig
from quantwise.checkpoint.exporters import export
from quantwise.checkpoint.exporters import gguf as gguf_exporter
from quantwise.engines import llama_cpp, vllm_engine
from quantwise.engines.llama_cpp import EngineMissing
from quantwise.evaluation.perplexity import chunked_perplexity
from quantwise.methods import build_method
from quantwise.models.source import resolve_model_dir
from quantwise.pipeline.sequential import QuantizeJob, run_quantize

pytestmark = pytest.mark.interop
CTX, CHUNKS = 256, 4


def _need(check):
    try:
        return check()
    except (EngineMissing, FileNotFoundError) as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def smollm2_int4(tmp_path_factory):
    model_dir = _need(lambda: resolve_model_dir("smollm2-135m"))
    text = model_dir.parent.parent / "text" / "austen" / "emma.txt"
    if not text.exists():
        pytest.skip("run `quantwise data fetch` for the texts")
    out = tmp_path_factory.mktemp("smol") / "rtn-int4-g64"
    run_quantize(QuantizeJob("smollm2-135m", "rtn", build_method("rtn", "int4-g64"),
                             CalibrationConfig((str(text),), 2, 64, 0), out))
    eval_text = tmp_path_factory.mktemp("text") / "eval.txt"
    eval_text.write_text((text.parent / "prideprejudice.txt").read_text(encoding="utf-8")[:40000], encoding="utf-8")
    return out, eval_text


def test_llama_cpp_perplexity_matches_ours_and_needs_the_permutation(smollm2_int4, tmp_path, monkeypatch):
    _need(llama_cpp.binaries)
    ckpt, text = smollm2_int4
    export(ckpt, "gguf", tmp_path / "g")
    gguf_file = tmp_path / "g" / "model.gguf"
    ids = torch.tensor(llama_cpp.tokenize(gguf_file, text))
    ours = chunked_perplexity(quantwise.load(ckpt, kernels=False), ids, CTX, CHUNKS).perplexity
    theirs = llama_cpp.perplexity(gguf_file, text, CTX, CHUNKS).perplexity
    assert abs(theirs / ours - 1) < 0.01, (theirs, ours)
    monkeypatch.setattr(gguf_exporter, "permute_qk", lambda rows, heads: rows)
    export(ckpt, "gguf", tmp_path / "unpermuted")
    broken = llama_cpp.perplexity(tmp_path / "unpermuted" / "model.gguf", text, CTX, CHUNKS).perplexity
    assert broken / ours > 1.05, (broken, ours)


def _chunks(ids):
    return [ids[i * CTX:(i + 1) * CTX].tolist() for i in range(CHUNKS)]


def test_vllm_runs_the_compressed_tensors_export_and_exposes_a_wrong_offset(smollm2_int4, tmp_path):
    _need(vllm_engine.python)
    from transformers import AutoTokenizer

    ckpt, text = smollm2_int4
    export(ckpt, "compressed-tensors", tmp_path / "ct")
    tokenizer = AutoTokenizer.from_pretrained(str(ckpt))
    ids = torch.tensor(tokenizer(text.read_text(encoding="utf-8"))["input_ids"])
    model = quantwise.load(ckpt, kernels=False, dtype=torch.bfloat16)
    ours = chunked_perplexity(model, ids, CTX, CHUNKS).perplexity
    theirs = vllm_engine.score_chunks(tmp_path / "ct", _chunks(ids))
    assert theirs.quantization == "compressed-tensors"
    assert abs(theirs.perplexity / ours - 1) < 0.01, (theirs.perplexity, ours)
    with torch.no_grad():
        top1 = [model(torch.tensor([c])).logits[0, CTX // 2:CTX - 1].argmax(-1).tolist() for c in _chunks(ids)]
    agree = sum(a == b for x, y in zip(theirs.top1, top1, strict=True) for a, b in zip(x, y, strict=True))
    assert agree / sum(len(x) for x in top1) >= 0.95
    for shard in (tmp_path / "ct").glob("model-*.safetensors"):  # negative control: codes without the +8 offset
        tensors = load_file(shard)
        for name in [n for n in tensors if n.endswith("weight_packed")]:
            tensors[name] = tensors[name] ^ torch.tensor(0x88888888 - 2**32, dtype=torch.int32)
        save_file(tensors, shard, metadata={"format": "pt"})
    broken = vllm_engine.score_chunks(tmp_path / "ct", _chunks(ids))
    assert broken.perplexity / ours > 1.5
