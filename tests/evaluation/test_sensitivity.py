import json
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from transformers import AutoModelForCausalLM

from quantwise.cli.main import cli
from quantwise.evaluation.sensitivity import layer_sensitivity, mixed_precision_plan, plan_kl, target_linears
from quantwise.formats import bits_per_weight, parse_spec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_models import make_tiny_model, write_text  # noqa: E402

DAMAGED = "model.layers.1.mlp.down_proj"


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """A tiny model whose layer 1 down_proj has one huge outlier weight per row: INT4 ruins it."""
    root = tmp_path_factory.mktemp("sens")
    model_dir = make_tiny_model(root / "m", layers=3)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        weight = model.get_submodule(DAMAGED).weight
        weight[:, 0] = 40.0 * weight.abs().max()
        weight[:, 1:] *= 3.0
    model.save_pretrained(model_dir)
    return model_dir, write_text(root / "t.txt")


def test_sensitivity_finds_the_damaged_layer(damaged):
    model_dir, _ = damaged
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ids = torch.randint(0, 256, (160,), generator=torch.Generator().manual_seed(0))
    rows = layer_sensitivity(model, ids, "int4-channel", window=80)
    assert rows[0].name == DAMAGED
    assert rows[0].kl > 3 * rows[1].kl
    # the model is restored after the scan
    again = layer_sensitivity(model, ids, "int4-channel", window=80)
    assert again[0].kl == pytest.approx(rows[0].kl)


def test_mixed_plan_respects_budget_and_beats_uniform(damaged):
    model_dir, _ = damaged
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ids = torch.randint(0, 256, (160,), generator=torch.Generator().manual_seed(1))
    rows = layer_sensitivity(model, ids, "int4-g32", window=80)
    shapes = {n: tuple(m.weight.shape) for n, m in target_linears(model)}
    for budget in (4.6, 5.0, 6.0):
        plan = mixed_precision_plan(rows, shapes, "int4-g32", "int8-channel", budget)
        total = sum(r * c for r, c in shapes.values())
        achieved = sum(bits_per_weight(parse_spec(plan.format_for(n)), r, c) * r * c
                       for n, (r, c) in shapes.items()) / total
        assert achieved == pytest.approx(plan.achieved_bpw) and achieved <= budget
    plan = mixed_precision_plan(rows, shapes, "int4-g32", "int8-channel", 4.9)
    assert DAMAGED in plan.overrides
    mixed = plan_kl(model, ids, plan.format_for, window=80)
    uniform = plan_kl(model, ids, lambda _n: "int4-g16", window=80)  # 5.0 bits/weight, more than the plan
    assert mixed < uniform
    with pytest.raises(ValueError, match="below"):
        mixed_precision_plan(rows, shapes, "int4-g32", "int8-channel", 4.0)


def test_cli_plan_feeds_quantize(damaged, tmp_path):
    model_dir, text = damaged
    plan_file, heatmap = tmp_path / "plan.json", tmp_path / "heat.png"
    result = CliRunner().invoke(cli, ["sensitivity", str(model_dir), "--text", str(text), "--format", "int4-g32",
                                      "--max-tokens", "160", "--window", "80", "--budget", "4.9",
                                      "--plan-out", str(plan_file), "--heatmap", str(heatmap), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[result.output.index("{"):])
    assert payload["check"]["mixed_beats_uniform"]
    upgraded = json.loads(plan_file.read_text())["overrides"]
    assert upgraded
    assert heatmap.stat().st_size > 1000
    out = tmp_path / "q"
    result = CliRunner().invoke(cli, ["quantize", str(model_dir), "--method", "rtn", "--plan", str(plan_file),
                                      "--calib", str(text), "--samples", "4", "--seq-len", "16", "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "quantwise.json").read_text())
    for block, linears in manifest["layers"].items():
        for name, meta in linears.items():
            expected = upgraded.get(f"model.layers.{block}.{name}", "int4-g32")
            assert meta["weight"]["name"] == expected
