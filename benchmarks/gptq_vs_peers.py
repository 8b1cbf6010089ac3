"""GPTQ INT4 on SmolLM2-135M: quantwise against GPTQModel and llm-compressor, each with its own
defaults, one after another in one run: wall time, CPU time (user + sys) and peak RSS of each
quantization process (`/usr/bin/time`), and the perplexity of every result by one evaluator
(quantwise, after importing the peers' GPTQ / compressed-tensors checkpoints with their codes).

    bash scripts/peers.sh gptqmodel && bash scripts/peers.sh llm-compressor
    python3 benchmarks/gptq_vs_peers.py [--groups 64,128] [--tools quantwise,gptqmodel,llm-compressor]
        [--seeds 0,1,2]

Calibration: --samples x --seq-len tokens of Emma (the same token ids for every tool), one set per
seed; perplexity: Pride and Prejudice, first 20,000 tokens, window 1024, stride 512. llm-compressor
refuses g128 on SmolLM2 (576 = 4.5 x 128): that cell is skipped. A tool written TOOL@DTYPE runs with
that precision: quantwise's `--compute-dtype`, the model loaded in it for llm-compressor; quantwise+FLAG
adds `--FLAG` to its command (quantwise+no-asymmetric).

A quantized model's perplexity moves by about 1% under changes that should not matter (Gemma-3
int4-g128: calibration batch size 4 -> 2, only the summation order of X^T X and the GEMMs changes,
25.12 -> 25.40): compare tools on means over several seeds, not one run. The summary at the end
gives each tool's mean and standard deviation over the seeds, and its mean wall and CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from transformers import AutoModelForCausalLM

import quantwise
from quantwise.cache import cache_dir
from quantwise.calibration import load_texts, token_samples
from quantwise.checkpoint.importers import as_native
from quantwise.cli.eval_cmd import eval_tokens
from quantwise.evaluation.perplexity import perplexity
from quantwise.models.source import resolve_model_dir
from quantwise.models.tokenizer import load_text_tokenizer

_GPTQMODEL = r"""
import json, sys
from gptqmodel import GPTQModel, QuantizeConfig
r = json.load(open(sys.argv[1]))
model = GPTQModel.load(r["model"], QuantizeConfig(bits=4, group_size=r["group_size"]))
model.quantize([{"input_ids": ids, "attention_mask": [1] * len(ids)} for ids in r["calibration"]], batch_size=1)
model.save(r["out"])
"""

_LLMCOMPRESSOR = r"""
import json, sys, torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from llmcompressor import oneshot
from llmcompressor.modifiers.quantization import GPTQModifier
r = json.load(open(sys.argv[1]))
model = AutoModelForCausalLM.from_pretrained(r["model"], dtype=getattr(torch, r["dtype"]))
data = Dataset.from_dict({"input_ids": r["calibration"], "attention_mask": [[1] * len(x) for x in r["calibration"]]})
weights = {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": r["group_size"]}
recipe = GPTQModifier(ignore=["lm_head"], config_groups={"g": {"targets": ["Linear"], "weights": weights}})
oneshot(model=model, dataset=data, recipe=recipe, max_seq_length=len(r["calibration"][0]),
        num_calibration_samples=len(r["calibration"]))
model.save_pretrained(r["out"], save_compressed=True)
AutoTokenizer.from_pretrained(r["model"]).save_pretrained(r["out"])
"""


def peer_python(name: str) -> Path:
    return cache_dir("peers") / f"{name}-venv" / "bin" / "python"


def timed(cmd: list[str], env: dict, json_report: bool) -> dict:
    """Wall s, CPU s (user + sys) and peak RSS MiB of a command, by GNU time; `report`: the JSON
    the command printed when `json_report` (quantwise's memory parts and time per phase; the peers
    print logs that contain braces)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as out:
        done = subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M", "-o", out.name, *cmd], check=True, env=env,
                              capture_output=True, text=True)
        wall, user, system, rss_kb = out.read().split()[-4:]
    report = json.loads(done.stdout[done.stdout.index("{"):]) if json_report else None
    return {"wall_s": float(wall), "cpu_s": float(user) + float(system), "sys_s": float(system),
            "peak_rss_mb": int(rss_kb) / 1024,
            "report": report and {k: report[k] for k in ("memory", "times", "peak_rss_mb")}}


def quantize(tool: str, group: int, model_dir: Path, calib: list[list[int]], seed: int, args,
             work: Path) -> tuple[dict, Path]:
    tool, *flags = tool.split("+")
    tool, _, dtype = tool.partition("@")
    out = work / f"{tool}-{dtype or 'default'}{''.join('-' + f for f in flags)}-g{group}-s{seed}"
    env = {**os.environ, "GPTQMODEL_CPU_WORKERS": str(os.cpu_count() or 1)}
    if tool == "quantwise":
        cmd = [sys.executable, "-m", "quantwise.cli", "quantize", str(model_dir), "--method", "gptq",
               "--format", f"int4-g{group}", "--calib", str(args.calib), "--samples", str(args.samples),
               "--seq-len", str(args.seq_len), "--seed", str(seed), "--out", str(out), "--json"]
        cmd += ["--compute-dtype", dtype] if dtype else []
        return timed(cmd + [f"--{flag}" for flag in flags], env, json_report=True), out
    request = work / f"{out.name}.json"
    request.write_text(json.dumps({"model": str(model_dir), "group_size": group, "out": str(out),
                                   "calibration": calib, "dtype": dtype or "float32"}))
    script = _GPTQMODEL if tool == "gptqmodel" else _LLMCOMPRESSOR
    return timed([str(peer_python(tool.replace("-", ""))), "-c", script, str(request)], env, json_report=False), \
        as_native(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--groups", default="64,128")
    parser.add_argument("--no-reference", action="store_true", help="skip the fp32 perplexity")
    parser.add_argument("--tools", default="quantwise,gptqmodel,llm-compressor")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--eval-tokens", type=int, default=20000)
    parser.add_argument("--seeds", default="0", help="calibration windows' seeds, one run of every tool per seed "
                                                       "(the same ids for every tool)")
    parser.add_argument("--work", default=None, help="keep the checkpoints here")
    args = parser.parse_args()
    model_dir = resolve_model_dir(args.model)
    text = cache_dir("text") / "austen"
    args.calib = text / "emma.txt"
    tokenizer = load_text_tokenizer(model_dir)
    texts = load_texts([str(args.calib)])
    # every window starts with the tokenizer's <bos> where it puts one, as the model was trained (Gemma)
    ids, bos, _ = eval_tokens(model_dir, str(text / "prideprejudice.txt"), args.eval_tokens)
    reference = None if args.no_reference else perplexity(
        AutoModelForCausalLM.from_pretrained(str(model_dir)), ids, 1024, 512, bos).perplexity
    print(f"fp32 reference {reference}; load {os.getloadavg()}", flush=True)
    config = json.loads((model_dir / "config.json").read_text())
    widths = (config["hidden_size"], config["intermediate_size"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        for seed in map(int, args.seeds.split(",")):
            calib = token_samples(tokenizer, texts, args.samples, args.seq_len, seed).tolist()
            for group in map(int, args.groups.split(",")):
                for tool in args.tools.split(","):
                    if tool.startswith("llm-compressor") and any(w % group for w in widths):
                        continue  # it refuses a group size that does not divide every layer
                    load = os.getloadavg()[0]
                    measured, out = quantize(tool, group, model_dir, calib, seed, args, work)
                    value = perplexity(quantwise.load(out, kernels=False), ids, 1024, 512, bos).perplexity
                    row = {"tool": tool, "group": group, "seed": seed, **measured, "ppl": value, "load_before": load}
                    rows.append(row)
                    print(f"{tool:<24} g{group:<4} seed {seed}  wall {row['wall_s']:7.1f} s  cpu {row['cpu_s']:7.1f} s"
                          f"  (sys {row['sys_s']:6.1f})  peak RSS {row['peak_rss_mb']:7.0f} MiB  ppl {value:7.3f}  "
                          f"load {load:.2f}", flush=True)
                    print(json.dumps(row), file=sys.stderr, flush=True)  # kept if a later cell fails
    print(summary(rows), flush=True)
    print(json.dumps({"reference_ppl": reference, "rows": rows}))


def summary(rows: list[dict]) -> str:
    """Per group size and tool: perplexity mean +- standard deviation over the seeds, mean wall and
    CPU seconds, the largest peak RSS, and wall and CPU time as multiples of quantwise's (defaults)."""
    lines = ["", "tool                      group  seeds  ppl mean +- sd     wall s   cpu s  peak MiB  "
                 "wall / quantwise  cpu / quantwise"]
    for group in dict.fromkeys(r["group"] for r in rows):
        cells = {tool: [r for r in rows if r["group"] == group and r["tool"] == tool]
                 for tool in dict.fromkeys(r["tool"] for r in rows)}
        base = cells.get("quantwise") or []
        for tool, runs in cells.items():
            if not runs:
                continue
            ppl = statistics.fmean(r["ppl"] for r in runs)
            sd = statistics.stdev(r["ppl"] for r in runs) if len(runs) > 1 else float("nan")
            wall, cpu = (statistics.fmean(r[k] for r in runs) for k in ("wall_s", "cpu_s"))
            ratios = ""
            if base:
                ratios = (f"{wall / statistics.fmean(r['wall_s'] for r in base):16.2f}"
                          f"{cpu / statistics.fmean(r['cpu_s'] for r in base):17.2f}")
            lines.append(f"{tool:<24} g{group:<5} {len(runs):5d}  {ppl:7.3f} +- {sd:5.3f}  {wall:8.1f} {cpu:7.1f} "
                         f"{max(r['peak_rss_mb'] for r in runs):9.0f}{ratios}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
