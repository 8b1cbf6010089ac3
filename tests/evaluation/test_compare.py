import json
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from transformers import AutoModelForCausalLM

from quantwise.cli.main import cli
from quantwise.evaluation.compare import compare_models
from quantwise.evaluation.memory import inspect_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_models import make_tiny_model, write_text  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    model_dir = make_tiny_model(root / "m", layers=2)
    text = write_text(root / "t.txt")
    out = root / "q"
    result = CliRunner().invoke(cli, ["quantize", str(model_dir), "--method", "rtn", "--format", "int4-g32",
                                      "--calib", str(text), "--samples", "4", "--seq-len", "16", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return model_dir, text, out


def test_model_against_itself_has_zero_kl_and_full_agreement(setup):
    model_dir, _, _ = setup
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ids = torch.randint(0, 256, (200,), generator=torch.Generator().manual_seed(0))
    rows = compare_models(model, {"same": model}, ids, window=64, stride=32)
    same = rows[1]
    assert same.kl_mean == pytest.approx(0.0, abs=1e-7)
    assert same.top1_agreement == 1.0
    assert same.perplexity == pytest.approx(rows[0].perplexity)


def test_quantized_model_has_positive_kl_and_cache_reuse(setup, tmp_path):
    model_dir, _, out = setup
    import quantwise
    reference = AutoModelForCausalLM.from_pretrained(model_dir)
    quantized = quantwise.load(out, kernels=False)
    ids = torch.randint(0, 256, (150,), generator=torch.Generator().manual_seed(1))
    cache = tmp_path / "ref.safetensors"
    first = compare_models(reference, {"q": quantized}, ids, 64, 32, cache_file=cache)
    assert cache.exists()
    again = compare_models(None, {"q": quantized}, ids, 64, 32, cache_file=cache)
    assert first[1].kl_mean > 0 and first[1].top1_agreement < 1
    assert again[1].kl_mean == pytest.approx(first[1].kl_mean, rel=1e-6)
    with pytest.raises(ValueError, match="no reference"):
        compare_models(None, {"q": quantized}, ids[:100], 64, 32, cache_file=cache)


def test_eval_cli_and_memory_accounting(setup):
    model_dir, text, out = setup
    result = CliRunner().invoke(cli, ["eval", str(model_dir), str(out), "--text", str(text), "--max-tokens", "300",
                                      "--window", "64", "--stride", "32", "--json", "--memory"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[result.output.index("{"):])
    quality = {row["name"]: row for row in payload["quality"]}
    assert quality[str(model_dir)]["kl_mean"] == pytest.approx(0, abs=1e-7)
    assert quality[str(out)]["kl_mean"] > 0
    memory = {row["path"]: row for row in payload["memory"]}
    # int4 g32 symmetric with fp16 scales: 4 + 16/32 = 4.5 bits per linear weight, from the files
    assert memory[str(out)]["linear_bits_per_weight"] == pytest.approx(4.5)
    assert memory[str(model_dir)]["linear_bits_per_weight"] == pytest.approx(32.0)
    assert memory[str(out)]["peak_rss_load_mb"] > 0


def test_inspect_matches_quantized_storage(setup):
    _, _, out = setup
    report = inspect_checkpoint(out)
    manifest = json.loads((out / "quantwise.json").read_text())
    weights = sum(m["shape"][0] * m["shape"][1] for block in manifest["layers"].values() for m in block.values())
    assert report.linear_weights == weights
    assert report.linear_bytes == weights // 2 + weights // 32 * 2


def test_eval_through_the_packed_kernels_matches_the_dequantized_path(setup):
    model_dir, text, out = setup
    result = CliRunner().invoke(cli, ["eval", str(model_dir), str(out), "--text", str(text), "--window", "64",
                                      "--stride", "32", "--max-tokens", "400", "--kernels", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output[result.output.index("{"):])["quality"]}
    dequantized, served = rows[str(out)], rows[f"[kernels] {out}"]
    # same INT4 weights; the kernel path only adds bf16 rounding of the layer inputs
    assert served["perplexity"] == pytest.approx(dequantized["perplexity"], rel=0.02)
    # a wrong kernel layout (scales off by 30%) gives 15x the KL here: 2.2e-3 against 1.5e-4
    assert served["kl_mean"] == pytest.approx(dequantized["kl_mean"], rel=0.5, abs=1e-4)
