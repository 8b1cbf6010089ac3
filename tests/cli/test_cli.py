import json
import re

import pytest
from click.testing import CliRunner

from quantwise.cli.main import cli


def run(*args):
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("command", [[], ["formats"], ["plan"], ["recommend"], ["hardware"], ["models"],
                                     ["assumptions"], ["engines"], ["validate"], ["calibrate"]])
def test_help_everywhere(command):
    code, out, _ = run(*command, "--help")
    assert code == 0 and "Usage" in out


def test_recommend_default_is_the_lesson_scenario():
    code, out, _ = run("recommend")
    assert code == 0
    assert out.startswith("llama-3-70b: 3,584 in / 512 out tokens, 0.226 requests/s (10,000,000 output tokens/day; "
                          "peak 2x = 231 tokens/s); TPOT 50 ms")
    assert "[wrong] INT8 fits on one A100 80GB" in out
    assert "[agrees] FP16 weights of the 70B model: lesson 140 GB, quantwise 141.1 GB" in out
    assert "rtx-3090" not in out.split("The lesson's arithmetic")[0]  # consumer cards are not ranked


def test_lesson_check_only_for_the_lessons_scenario():
    code, out, _ = run("recommend", "--gpus", "h100-sxm")  # the example: the lesson's workload, other GPUs
    assert code == 0 and "The lesson's arithmetic" not in out
    code, out, _ = run("recommend", "--gpus", "h100-sxm", "--lesson")
    assert code == 0 and "The lesson's arithmetic" in out
    code, out, _ = run("recommend", "--gpus", "h100-sxm", "--input-len", "2000", "--output-len", "300")
    assert code == 0 and "The lesson's arithmetic" not in out
    code, out, _ = run("recommend", "--gpus", "h100-sxm", "--input-len", "2000", "--output-len", "300", "--lesson")
    assert code == 0 and "The lesson's arithmetic" in out


def test_recommend_serving_scenario_names_binding_target():
    code, out, _ = run("recommend", "--input-len", "2000", "--output-len", "300", "--requests-per-s", "5",
                       "--ttft-ms", "1000", "--tpot-ms", "40")
    assert code == 0
    assert "TTFT 1000 ms, TPOT 40 ms" in out.splitlines()[0]
    assert re.search(r"  - (TPOT|TTFT|Memory) binds", out)
    assert "The lesson's arithmetic" not in out


def test_cheaper_consumer_option_is_shown_apart_with_caveats():
    code, out, _ = run("recommend", "--model", "llama-3-8b", "--tokens-per-day", "1M", "--input-len", "1000",
                       "--output-len", "200")
    line = next(x for x in out.splitlines() if x.startswith("Cheaper on a consumer GPU"))
    assert code == 0 and "GeForce RTX 3090" in line and "unconfirmed" in line and "licence" in line
    code, out, _ = run("recommend", "--classes", "consumer")  # a datacenter plan apart: no consumer caveat
    line = next(x for x in out.splitlines() if x.startswith("Cheaper on a datacenter GPU"))
    assert code == 0 and "Caveat" not in line and "workstation" not in line


def test_kv_column_when_several_kv_dtypes():
    code, out, _ = run("recommend", "--gpus", "h100-sxm", "--kv-dtype", "fp16,fp8", "--top", "4")
    assert code == 0 and "┃ KV" in out and "│ fp8" in out


def test_plan_decode_table_plans_every_kv_dtype():
    code, out, _ = run("plan", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--precision", "fp16", "--batch", "64",
                       "--kv-dtype", "fp16,fp8", "--json")
    rows = {r["kv_dtype"]: r for r in json.loads(out)}
    assert code == 0 and set(rows) == {"fp16", "fp8"}
    assert rows["fp8"]["max_batch"] == 2 * rows["fp16"]["max_batch"]  # half the bytes per token
    code, out, _ = run("plan", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--precision", "fp16", "--batch", "64",
                       "--kv-dtype", "fp16,fp8")
    assert "┃ KV" in out and "│ fp8" in out


def test_recommend_json_matches_rows():
    code, out, _ = run("recommend", "--json", "--gpus", "a100-80gb,h100-sxm")
    assert code == 0
    payload = json.loads(out)
    plans = payload["recommendation"]["plans"]
    assert plans and {p["gpu"] for p in plans} <= {"a100-80gb", "h100-sxm"}
    assert all(p["tpot_ms"] <= 50 for p in plans)


def test_plan_serving_table_and_refusals():
    code, out, _ = run("plan", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--precision", "fp8,int4",
                       "--engine", "llama.cpp", "--input-len", "1000", "--output-len", "200", "--tpot-ms", "30")
    assert code == 0
    assert "refused: llama.cpp (llama-server) has no kernel for fp8 on H100 SXM5 80GB" in out
    code, out, _ = run("plan", "--model", "llama-3-8b", "--gpu", "h200", "--precision", "fp8", "--max-throughput",
                       "--input-len", "1000", "--output-len", "1000", "--json")
    row = json.loads(out)["rows"][0]
    assert row["binding"] == "memory" and row["concurrency"] == row["kv_limit"]


def test_plan_json_and_table_agree():
    args = ["plan", "--model", "llama-3-8b", "--gpu", "l4,h100-sxm", "--precision", "fp16,int4", "--batch", "1,16"]
    code, table, _ = run(*args)
    assert code == 0
    code, raw, _ = run(*args, "--json")
    rows = json.loads(raw)
    assert len(rows) == 8
    for row in rows:
        pattern = rf"{row['gpu']}\s*│\s*{row['precision']}\s*│.*│\s*{row['batch']}\s*│.*{row['ms_per_token']:,.1f}"
        assert re.search(pattern, table), (row["gpu"], row["precision"], row["batch"])


@pytest.mark.parametrize("args,needle", [
    (["plan", "--gpu", "tpu-v9"], "unknown GPU"),
    (["plan", "--model", "llama-9-1t"], "unknown model"),
    (["plan", "--precision", "int5"], "unknown precision"),
    (["plan", "--batch", "0"], "positive"),
    (["recommend", "--tokens-per-day", "-5"], "traffic"),
    (["recommend", "--tokens-per-day", "lots"], "not a quantity"),
    (["recommend", "--assume", "bandwidth_efficiency=2"], "out of range"),
    (["recommend", "--input-len", "0"], "--input-len must be a positive number of tokens"),
    (["recommend", "--output-len", "-20"], "--output-len must be a positive number of tokens"),
    (["recommend", "--input-len", "2000", "--ttft-ms", "10"], "no plan can meet TTFT 10 ms"),
    (["recommend", "--gpus", "mi300x", "--engine", "tensorrt-llm"], "TensorRT-LLM has no kernel for"),
    (["plan", "--gpu", "h100-sxm", "--precision", "fp8", "--engine", "llama.cpp", "--input-len", "100",
      "--output-len", "100"], "llama.cpp (llama-server) has no kernel for fp8"),
    (["recommend", "--engine", "vllm2"], "unknown engine"),
    (["recommend", "--requests-per-s", "1", "--tokens-per-day", "1M"], "not both"),
    # found in review of issue 13: each used to print a plan or a misleading line
    (["plan", "--tp", "3"], "--tp 3 does not split llama-3-70b's 64 attention heads and 8 KV heads"),
    (["plan", "--tp", "16", "--input-len", "100", "--output-len", "100"], "at most 8 GPUs"),
    (["recommend", "--input-len", "10000000"], "one 10,000,256-token sequence (prompt + half the answer) fits no"),
    (["recommend", "--requests-per-s", "0"], "recommend needs traffic above zero"),
    (["recommend", "--requests-per-s", "1e12"], "more than any deployment"),
    (["recommend", "--classes", "gaming"], "unknown GPU class 'gaming'"),
    (["recommend", "--requests-per-s", "nan"], "'nan' is not a finite number"),  # click's 3-line usage block
    (["recommend", "--input-len", "2.5"], "'2.5' is not a valid integer"),
    (["plan", "--tp", "128"], "at most 8 GPUs"),
    (["validate", "--no-such-option"], "No such option"),
    (["formats", "--format", "int4-g0"], "group_size"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert needle in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_config_missing_fields(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    result = CliRunner().invoke(cli, ["plan", "--model", str(tmp_path)])
    assert result.exit_code == 2 and "num_attention_heads" in result.output


def test_infeasible_slo_prints_closest_and_exits_3():
    result = CliRunner().invoke(cli, ["recommend", "--slo-ms", "0.5", "--gpus", "a100-80gb"])
    assert result.exit_code == 3
    assert "closest" in result.output
    assert "no plan meets the targets for llama-3-70b" in result.output
    closest = result.output.split("the closest")[1].split("GPUs = ")[0]
    assert not re.search(r"│ +│", closest)  # no blank cell (method, quality)


def test_formats_json_fields():
    code, out, _ = run("formats", "--json", "--format", "nf4-g64", "--format", "int4-g64", "--rows", "256",
                       "--cols", "512")
    rows = json.loads(out)
    assert [r["format"] for r in rows] == ["nf4-g64", "int4-g64"]
    for row in rows:
        assert {"format", "granularity", "group_size", "bits_per_weight", "sqnr_gaussian_db",
                "sqnr_student_t_db", "sqnr_outliers_db"} <= set(row)
    assert rows[0]["sqnr_gaussian_db"] > rows[1]["sqnr_gaussian_db"]


def test_formats_study_claims():
    from quantwise.evaluation.format_study import run_format_study
    rows = {r.format: r for r in run_format_study(["int4-tensor", "int4-g128", "nf4-g64", "int4-g64",
                                                   "int8-tensor", "fp8_e4m3-tensor"], rows=256, cols=1024)}
    assert rows["nf4-g64"].sqnr_gaussian_db > rows["int4-g64"].sqnr_gaussian_db
    assert rows["int4-g128"].sqnr_outliers_db > rows["int4-tensor"].sqnr_outliers_db + 3
    assert rows["fp8_e4m3-tensor"].sqnr_student_t_db > rows["int8-tensor"].sqnr_student_t_db
    again = run_format_study(["int4-g128"], rows=256, cols=1024)[0]
    assert again == rows["int4-g128"]  # seeded and deterministic


def test_table_cells_print_brackets_as_written():
    from dataclasses import dataclass

    from rich.console import Console

    from quantwise.reporting import Column, print_table

    @dataclass
    class Row:
        name: str

    console = Console(record=True, width=80)
    print_table([Row("[kernels] runs/q"), Row("[bold]x")], [Column("name", "name", justify="left")], console=console)
    text = console.export_text()
    assert "[kernels] runs/q" in text and "[bold]x" in text


def test_assumptions_print_their_reasons():
    code, out, _ = run("assumptions")
    assert code == 0 and "Reasons: quantwise/planning/assumptions.py" not in out
    assert "bandwidth_efficiency = 0.7\n    Fraction of spec memory bandwidth" in out
    assert "interconnect_efficiency = 0.5\n    Share of the catalogue's interconnect rate" in out


def test_engines_and_hardware_list_their_data():
    code, out, _ = run("engines")
    assert code == 0 and "tensorrt-llm" in out and "vLLM docs Quantization" in out
    code, out, _ = run("hardware")
    assert code == 0 and "consumer" in out and "9000" in out  # B200 FP4


def test_validate_prints_errors_sources_and_median():
    code, out, _ = run("validate", "--kind", "ttft")
    assert code == 0 and "Sources:" in out and "Median |error| over 10 rows" in out
    code, raw, _ = run("validate", "--json")
    payload = json.loads(raw)
    assert payload["summary"]["median_abs_error_pct"] < 20 and len(payload["rows"]) >= 60


def test_calibrate_writes_a_profile_that_plan_and_recommend_take(tmp_path):
    results = tmp_path / "mine.csv"
    results.write_text("model,gpu,engine,precision,batch,input_len,output_len,tpot_ms\n"
                       "llama-3-8b,h100-sxm,vllm,fp16,1,128,128,12.0\n"
                       "smollm2-135m,h100-sxm,vllm,fp16,1,128,128,2.5\n"
                       "qwen2.5-7b,h100-sxm,vllm,fp16,1,128,128,11.5\n")
    profile = tmp_path / "profile.json"
    code, out, _ = run("calibrate", str(results), "--out", str(profile), "--fit",
                       "bandwidth_efficiency,step_overhead_s")
    assert code == 0, out
    assert "err before" in out and "err after" in out and "bandwidth_efficiency 0.7 ->" in out
    args = ["plan", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--precision", "fp16", "--input-len", "128",
            "--output-len", "128", "--max-throughput", "--json"]
    _, plain, _ = run(*args)
    _, fitted, _ = run(*args, "--profile", str(profile))
    assert json.loads(fitted)["rows"][0]["tpot_ms"] > json.loads(plain)["rows"][0]["tpot_ms"]
    code, out, _ = run("recommend", "--model", "llama-3-8b", "--gpus", "h100-sxm", "--profile", str(profile))
    assert code == 0


def test_gpu_file_override_keeps_fp8_plans(tmp_path):
    override = tmp_path / "price.csv"
    override.write_text("id,price_per_hour\nh100-sxm,1.99\n")
    code, out, _ = run("recommend", "--gpus", "h100-sxm", "--precision", "fp8", "--gpu-file", str(override),
                       "--max-quality-loss", "none")
    assert code == 0 and "│ fp8 " in out and "2,905" in out  # 2 GPUs x 1.99 x 730 h


def test_the_cli_and_planner_do_not_import_torch():
    # recommend must answer in under a second: importing torch alone takes 1-3 s on a CI runner
    import subprocess
    import sys

    code = "import sys, quantwise.cli.main, quantwise.planning.recommend; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
