"""`quantwise data synth` writes the model one shard at a time: a checkpoint transformers and
quantwise's strict loader read as any other, deterministic per block, in about one shard's memory."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_checks import one_line_error, run
from safetensors import safe_open

from quantwise.errors import QuantwiseError
from quantwise.models import synthetic
from quantwise.models.arch import resolve_arch
from quantwise.models.synthetic import hf_config, meta_model, saved_tensor_names, write_synthetic_model


def tiny_config(preset: str, layers: int):
    """The preset's family (tying, biases, norms) at toy sizes, so a build takes milliseconds."""
    arch = dataclasses.replace(resolve_arch(preset), hidden=64, intermediate=128, heads=4, kv_heads=2, head_dim=16,
                               vocab=256)
    return hf_config(arch, layers)


def file_tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            tensors.update({name: handle.get_tensor(name) for name in handle.keys()})  # noqa: SIM118
    return tensors


@pytest.mark.parametrize("preset", ["smollm2-135m", "gemma-3-270m", "qwen2.5-7b"])  # tied, gemma norms, qkv bias
def test_streamed_model_loads_with_transformers_and_the_strict_loader(tmp_path, preset):
    from transformers import AutoModelForCausalLM

    from quantwise.models.loading import load_model

    config = tiny_config(preset, 2)
    out = write_synthetic_model(config, tmp_path / "m", "bfloat16", seed=3)
    meta = meta_model(config, "bfloat16")  # what the model class expects, tied lm_head left out
    expected = {name: meta.state_dict()[name] for name in saved_tensor_names(meta)}
    written = file_tensors(out)
    assert {n: (t.shape, t.dtype) for n, t in written.items()} == {n: (t.shape, t.dtype) for n, t in expected.items()}
    assert ("lm_head.weight" in written) == (not config.tie_word_embeddings)

    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(written)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in written.values())
    assert len(set(index["weight_map"].values())) == 2 + 2  # embeddings, 2 blocks, final norm (+ lm_head)

    model, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
    assert type(model).__name__ == json.loads((out / "config.json").read_text())["architectures"][0]
    logits = load_model(out)(torch.tensor([[1, 2, 3]])).logits
    assert torch.isfinite(logits).all() and logits.abs().max() < 100


def test_weights_are_initialised_as_the_model_class_does(tmp_path):
    llama = file_tensors(write_synthetic_model(tiny_config("qwen2.5-7b", 1), tmp_path / "q", "float32"))
    gemma = file_tensors(write_synthetic_model(tiny_config("gemma-3-270m", 1), tmp_path / "g", "float32"))
    assert torch.equal(llama["model.norm.weight"], torch.ones(64))             # RMSNorm: x * w
    assert torch.equal(gemma["model.norm.weight"], torch.zeros(64))            # Gemma: x * (1 + w)
    assert torch.equal(gemma["model.layers.0.self_attn.q_norm.weight"], torch.zeros(16))
    assert not llama["model.layers.0.self_attn.q_proj.bias"].any()
    for name in ("model.embed_tokens.weight", "model.layers.0.mlp.down_proj.weight", "lm_head.weight"):
        assert llama[name].std().item() == pytest.approx(0.02, rel=0.1)        # config.initializer_range


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_dtype_option(tmp_path, dtype):
    out = write_synthetic_model(tiny_config("smollm2-135m", 1), tmp_path / "m", dtype)
    assert {t.dtype for t in file_tensors(out).values()} == {getattr(torch, dtype)}
    assert json.loads((out / "config.json").read_text())["dtype"] == dtype


def test_same_seed_same_bytes_and_blocks_do_not_depend_on_the_block_count(tmp_path):
    first = write_synthetic_model(tiny_config("qwen2.5-7b", 2), tmp_path / "a", seed=7)
    again = write_synthetic_model(tiny_config("qwen2.5-7b", 2), tmp_path / "b", seed=7)
    for file in sorted(first.glob("*.safetensors")):
        assert file.read_bytes() == (again / file.name).read_bytes()

    two, three = file_tensors(first), file_tensors(write_synthetic_model(tiny_config("qwen2.5-7b", 3),
                                                                         tmp_path / "c", seed=7))
    shared = [name for name in two if not name.startswith("model.layers.")] + \
             [name for name in two if name.startswith(("model.layers.0.", "model.layers.1."))]
    assert len(shared) == len(two)
    assert all(torch.equal(two[name], three[name]) for name in shared)

    other = file_tensors(write_synthetic_model(tiny_config("qwen2.5-7b", 2), tmp_path / "d", seed=8))
    assert not torch.equal(two["model.layers.0.mlp.up_proj.weight"], other["model.layers.0.mlp.up_proj.weight"])


def test_refuses_a_non_empty_out_and_a_short_disk_before_writing(tmp_path, monkeypatch):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("keep me")
    one_line_error(run("data", "synth", "smollm2-135m", "--out", taken), "already exists")
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]

    monkeypatch.setattr(synthetic.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 10**12, 10**6))
    with pytest.raises(QuantwiseError, match="not enough disk .* needs .* GB, 0.00 GB free"):
        write_synthetic_model(tiny_config("smollm2-135m", 1), tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no out, no staging left behind


def test_a_failure_mid_way_leaves_no_output(tmp_path, monkeypatch):
    import quantwise.checkpoint.atomic as atomic

    real, calls = atomic.atomic_save_tensors, []

    def fail_on_second_shard(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("cannot write: disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(atomic, "atomic_save_tensors", fail_on_second_shard)
    with pytest.raises(OSError, match="disk full"):
        write_synthetic_model(tiny_config("smollm2-135m", 2), tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_a_preset_with_progress(tmp_path):
    result = run("data", "synth", "smollm2-135m", "--layers", "1", "--dtype", "float16", "--out", tmp_path / "m")
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stdout and "float16" in result.stdout
    assert "data synth: done [3/3" in result.stderr
    assert resolve_arch(str(tmp_path / "m")).hidden == 576


# SmolLM2's blocks (14 MiB each in fp32) with the vocabulary cut to 8192, so the embedding (18 MiB)
# is not much larger than a block: 16 blocks are 234 MiB, the largest shard 18 MiB.
PEAK_SCRIPT = """
import dataclasses, json, sys
from pathlib import Path
import torch
from transformers import AutoModelForCausalLM
from quantwise.models.arch import resolve_arch
from quantwise.models.synthetic import hf_config, meta_model, plan_shards, write_synthetic_model
from quantwise.sysinfo import peak_rss_mb

config = hf_config(dataclasses.replace(resolve_arch("smollm2-135m"), vocab=8192), 16)
largest = max(shard.nbytes for shard in plan_shards(meta_model(config, "float32"), config.num_hidden_layers))
baseline = peak_rss_mb()  # torch, transformers and the model class imported
write_synthetic_model(config, Path(sys.argv[1]) / "streamed", "float32")
streamed = peak_rss_mb()
# the old way, for contrast: the whole model in memory, then save_pretrained
AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(Path(sys.argv[1]) / "whole")
print(json.dumps({"baseline": baseline, "streamed": streamed, "whole": peak_rss_mb(), "largest": largest / 2**20}))
"""


def test_peak_memory_is_about_one_shard_not_the_model(tmp_path):
    """In a fresh process (its own VmHWM): writing adds under 3x the largest shard to the
    interpreter's memory, where building the whole model first adds more than that."""
    done = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(tmp_path)],
                          check=True, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    peak = json.loads(done.stdout.strip().splitlines()[-1])
    bound = 3 * peak["largest"]
    assert peak["streamed"] - peak["baseline"] < bound, peak
    assert peak["whole"] - peak["baseline"] > bound, peak  # the bound tells the two apart
