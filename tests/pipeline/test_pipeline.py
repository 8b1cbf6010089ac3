import dataclasses
import json
import shutil
import time

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file as save_tensors
from transformers import AutoModelForCausalLM

import quantwise
from quantwise.calibration import CalibrationConfig
from quantwise.checkpoint.layout import WORK
from quantwise.checkpoint.manifest import weights_hash
from quantwise.cli.main import cli
from quantwise.formats import parse_spec, quantize
from quantwise.methods import build_method
from quantwise.pipeline.sequential import QuantizeJob, run_quantize
from quantwise.runtime import QuantizedLinear


def job(model, text, out, method="gptq", fmt="int4-g32", **options):
    calibration = CalibrationConfig((str(text),), samples=6, seq_len=32, seed=1)
    return QuantizeJob(str(model), method, build_method(method, fmt, **options), calibration, out, batch_size=4)


def files_bytes(directory):
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_resume_after_interruption_is_byte_identical(tiny_llama, calib_text, tmp_path):
    whole = job(tiny_llama, calib_text, tmp_path / "whole", act_order=True)
    run_quantize(whole)
    parted = job(tiny_llama, calib_text, tmp_path / "parted", act_order=True)
    with pytest.raises(KeyboardInterrupt):
        run_quantize(parted, stop_after=1)
    assert not (tmp_path / "parted" / "quantwise.json").exists()  # an interrupted run never looks complete
    report = run_quantize(parted)
    assert report.resumed_from == 1
    assert files_bytes(tmp_path / "whole") == files_bytes(tmp_path / "parted")
    # the source's hash, taken in a background thread, is the whole directory's
    recorded = json.loads((tmp_path / "whole" / "quantwise.json").read_text())["source_hash"]
    assert recorded == weights_hash(tiny_llama) and len(recorded) == 64


def test_an_interruption_waits_for_the_block_files_being_written(tiny_llama, calib_text, tmp_path, monkeypatch):
    """Block files are written in a thread while the next block computes; a run stopped meanwhile
    leaves the last finished block's files whole and recorded, and resumes after it."""
    import quantwise.pipeline.sequential as sequential

    written = []
    real_save = sequential._save_block

    def slow_save(*args):
        time.sleep(0.5)   # still writing when the main thread stops
        real_save(*args)
        written.append(args[2]["done"])

    monkeypatch.setattr(sequential, "_save_block", slow_save)
    parted = job(tiny_llama, calib_text, tmp_path / "parted", method="rtn", fmt="int8")
    with pytest.raises(KeyboardInterrupt):
        run_quantize(parted, stop_after=1)
    assert written == [1]
    progress = json.loads((tmp_path / "parted" / WORK / "progress.json").read_text())
    assert progress["done"] == 1
    monkeypatch.setattr(sequential, "_save_block", real_save)
    assert run_quantize(parted).resumed_from == 1
    run_quantize(job(tiny_llama, calib_text, tmp_path / "whole", method="rtn", fmt="int8"))
    assert files_bytes(tmp_path / "whole") == files_bytes(tmp_path / "parted")


def test_a_run_killed_while_writing_its_first_block_resumes(tiny_llama, calib_text, tmp_path, monkeypatch):
    """The first block's layer file lands, its progress file never does and the next inputs are
    half written (SIGKILL in the writer thread, as the kill -9 test can hit): the directory is still
    recognised as this job's, the same job resumes it, and the dead writer's temporary file does
    not end up in the checkpoint (it did, in a CI run)."""
    import quantwise.pipeline.sequential as sequential

    real_save = sequential._save_block

    def killed_midway(inputs, tensors, state, state_file, layer_path, consumed):
        layer_path.parent.mkdir(parents=True, exist_ok=True)
        save_tensors(tensors, str(layer_path))
        (layer_path.parent / f".{layer_path.name}.k3x9q1.tmp").write_bytes(b"half a layer")  # a next write
        (state_file.parent / ".inputs.safetensors.u7m2pa.tmp").write_bytes(b"half the inputs")
        raise KeyboardInterrupt("killed while writing block 0")

    monkeypatch.setattr(sequential, "_save_block", killed_midway)
    parted = job(tiny_llama, calib_text, tmp_path / "parted", method="rtn", fmt="int8")
    with pytest.raises(KeyboardInterrupt):
        run_quantize(parted)
    monkeypatch.setattr(sequential, "_save_block", real_save)
    assert run_quantize(parted).resumed_from == 0
    run_quantize(job(tiny_llama, calib_text, tmp_path / "whole", method="rtn", fmt="int8"))
    assert files_bytes(tmp_path / "whole") == files_bytes(tmp_path / "parted")


def test_reload_gives_the_quantized_weights_and_outputs(tiny_llama, calib_text, tmp_path):
    run_quantize(job(tiny_llama, calib_text, tmp_path / "q", method="rtn", fmt="int4-g32-asym"))
    model = quantwise.load(tmp_path / "q", kernels=False)
    reference = AutoModelForCausalLM.from_pretrained(tiny_llama)
    spec = parse_spec("int4-g32-asym")
    for name, module in model.named_modules():
        if isinstance(module, QuantizedLinear):
            original = reference.get_submodule(name).weight.detach()
            assert torch.equal(module.dense_weight(), quantize(original, spec).dequantize())
    ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        first, again = model(ids).logits, quantwise.load(tmp_path / "q", kernels=False)(ids).logits
        ref = reference(ids).logits
    assert torch.equal(first, again)
    assert 0 < float((first - ref).norm() / ref.norm()) < 0.5


@pytest.mark.parametrize("method,fmt,options", [
    ("awq", "int4-g32", {}), ("smoothquant", "int8-channel", {"alpha": 0.8}), ("llm-int8", "int8-channel", {}),
    ("gptq", "int3-g32-asym", {"static_groups": True, "act_order": True}),
])
def test_methods_run_on_gemma_and_reload(tiny_gemma, calib_text, tmp_path, method, fmt, options):
    report = run_quantize(job(tiny_gemma, calib_text, tmp_path / "q", method=method, fmt=fmt, **options))
    assert report.blocks == 2 and len(report.layers) == 14
    manifest = json.loads((tmp_path / "q" / "quantwise.json").read_text())
    assert manifest["method"]["name"] == method and manifest["calibration"]["hash"] == report.calibration_hash
    model = quantwise.load(tmp_path / "q", kernels=False)
    reference = AutoModelForCausalLM.from_pretrained(tiny_gemma)
    ids = torch.randint(0, 256, (1, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out, ref = model(ids).logits, reference(ids).logits
    bound = {"int8": 0.1, "int4": 0.6, "int3": 0.9}[fmt[:4]]  # tiny random models are fragile
    assert float((out - ref).norm() / ref.norm()) < bound


def cli_error(*args):
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return result.output.strip()


def test_clear_errors(tiny_llama, calib_text, tmp_path):
    out = str(tmp_path / "out")
    # missing config.json
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "config.json" in cli_error("quantize", str(empty), "--calib", str(calib_text), "--out", out)
    # corrupt safetensors
    broken = tmp_path / "broken"
    shutil.copytree(tiny_llama, broken)
    (broken / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    assert "corrupt safetensors" in cli_error("quantize", str(broken), "--calib", str(calib_text), "--out", out)
    # unknown architecture
    alien = tmp_path / "alien"
    shutil.copytree(tiny_llama, alien)
    config = json.loads((alien / "config.json").read_text())
    config["model_type"] = "fluxcapacitor"
    (alien / "config.json").write_text(json.dumps(config))
    assert "architecture" in cli_error("quantize", str(alien), "--calib", str(calib_text), "--out", out)
    # empty calibration text
    blank = tmp_path / "blank.txt"
    blank.write_text("   \n")
    assert "empty" in cli_error("quantize", str(tiny_llama), "--calib", str(blank), "--out", out)
    # pickle weights refused without opt-in
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_llama, pickled)
    (pickled / "model.safetensors").unlink()
    torch.save({"x": torch.zeros(1)}, pickled / "pytorch_model.bin")
    assert "allow-pickle" in cli_error("quantize", str(pickled), "--calib", str(calib_text), "--out", out)
    # short name not prepared
    assert "data fetch" in CliRunner(env={"QUANTWISE_CACHE": str(tmp_path / "cache")}).invoke(
        cli, ["quantize", "smollm2-135m", "--calib", str(calib_text), "--out", out]).output


def test_cli_quantize_json(tiny_llama, calib_text, tmp_path):
    result = CliRunner().invoke(cli, ["quantize", str(tiny_llama), "--method", "rtn", "--format", "nf4-g32",
                                      "--calib", str(calib_text), "--samples", "4", "--seq-len", "16",
                                      "--out", str(tmp_path / "q"), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[result.output.index("{"):])
    assert payload["blocks"] == 3 and payload["peak_rss_mb"] > 0
    assert all(layer["format"] == "nf4-g32" for layer in payload["layers"])


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gemma"])  # untied and tied lm_head
def test_quantized_lm_head_round_trips(fixture, calib_text, tmp_path, request):
    model_dir = request.getfixturevalue(fixture)
    spec_job = job(model_dir, calib_text, tmp_path / "q", method="rtn", fmt="int8-channel")
    run_quantize(dataclasses.replace(spec_job, quantize_lm_head=True))
    model = quantwise.load(tmp_path / "q", kernels=False)
    head = model.get_output_embeddings()
    assert isinstance(head, QuantizedLinear)
    reference = AutoModelForCausalLM.from_pretrained(model_dir)
    expected = quantize(reference.get_output_embeddings().weight.detach(), parse_spec("int8-channel")).dequantize()
    assert torch.equal(head.dense_weight(), expected)
    # the input embeddings stay full precision even when tied
    assert torch.equal(model.get_input_embeddings().weight, reference.get_input_embeddings().weight)


def test_offloaded_activations_give_the_same_checkpoint_and_resume(tiny_llama, calib_text, tmp_path):
    in_memory = run_quantize(job(tiny_llama, calib_text, tmp_path / "memory"))
    offloaded = dataclasses.replace(job(tiny_llama, calib_text, tmp_path / "disk"), offload_activations=True)
    with pytest.raises(KeyboardInterrupt):
        run_quantize(offloaded, stop_after=1)
    assert sorted(p.name for p in (tmp_path / "disk" / ".work").glob("acts-*")) == ["acts-1"]
    report = run_quantize(offloaded)
    assert report.resumed_from == 1
    # batches of 4 + 2 samples: one batch in and one out on disk, both batches twice in memory
    assert report.memory.activations_mb == pytest.approx(in_memory.memory.activations_mb * 8 / 12)
    assert files_bytes(tmp_path / "memory") == files_bytes(tmp_path / "disk")


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gemma"])  # untied and tied lm_head
def test_embeddings_are_not_held_while_blocks_are_quantized(fixture, calib_text, tmp_path, request, monkeypatch):
    """The skeleton's embeddings and lm_head leave memory once the calibration inputs are captured
    (an 8B model's are 4 GB in fp32); the rest shard still gets them, equal to the source's."""
    from quantwise.pipeline import sequential

    model_dir = request.getfixturevalue(fixture)
    seen = []
    real_build_block = sequential.build_block

    def build_block(skeleton, index, tensors):
        seen.append(skeleton.model.get_input_embeddings().weight.is_meta)
        return real_build_block(skeleton, index, tensors)

    monkeypatch.setattr(sequential, "build_block", build_block)
    run_quantize(job(model_dir, calib_text, tmp_path / "q", method="rtn", fmt="int4-g32"))
    assert seen and all(seen)
    model = quantwise.load(tmp_path / "q", kernels=False)
    reference = AutoModelForCausalLM.from_pretrained(model_dir)
    assert torch.equal(model.get_input_embeddings().weight, reference.get_input_embeddings().weight)
    assert torch.equal(model.get_output_embeddings().weight, reference.get_output_embeddings().weight)


def test_cli_gptq_refit_rounds_and_norm_weighting_reach_the_method_and_its_record(tiny_llama, calib_text, tmp_path):
    out = tmp_path / "q"
    result = CliRunner().invoke(cli, ["quantize", str(tiny_llama), "--method", "gptq", "--format", "int4-g32",
                                      "--calib", str(calib_text), "--samples", "4", "--seq-len", "32",
                                      "--refit-rounds", "2", "--norm-weighting", "--asymmetric", "--out", str(out)])
    assert result.exit_code == 0, result.output
    recorded = json.loads((out / "quantwise.json").read_text())
    assert recorded["method"]["config"]["options"]["asymmetric"] is True
    assert recorded["method"]["config"]["options"]["refit_rounds"] == 2
    assert recorded["method"]["config"]["options"]["norm_weighting"] is True
    assert "refit-rounds" in cli_error("quantize", str(tiny_llama), "--calib", str(calib_text),
                                       "--refit-rounds", "0", "--out", str(tmp_path / "r"))


def test_an_asymmetric_run_changes_the_linears_after_the_first_group_only(tiny_gemma, calib_text, tmp_path):
    """Through the whole pipeline (replay cache, tails): the first input group sees the float
    model's inputs already (its target is its weights: same codes as plain true-sequential GPTQ);
    every later linear fits a target of its own."""
    plain = run_quantize(job(tiny_gemma, calib_text, tmp_path / "plain", asymmetric=False))
    asym = run_quantize(job(tiny_gemma, calib_text, tmp_path / "asym"))   # the default
    first_group = ("q_proj", "k_proj", "v_proj")
    for ours, theirs in zip(asym.layers, plain.layers, strict=True):
        assert (ours.block, ours.name) == (theirs.block, theirs.name)
        if ours.name.rpartition(".")[2] in first_group and ours.block == 0:
            assert ours.relative_error == theirs.relative_error, ours.name
        elif ours.block == 0:
            assert ours.relative_error != theirs.relative_error, ours.name
