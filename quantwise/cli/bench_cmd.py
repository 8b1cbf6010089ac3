"""`quantwise bench`: decode/prefill speed with real packed kernels, against the roofline."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import click

from ..reporting import Column, print_json, print_table
from ..reporting.tables import fixed
from .common import allow_pickle_option, int_list, json_option, split_list

OWN_COLUMN = {"noisy", "ratio?"}  # shown by the IQR and "x fp32" ("0.43x?") columns, explained under the table
PREFILL_TOKENS = 128
_COLUMNS = [
    Column("format", "format", justify="left"), Column("batch", "batch"),
    Column("decode ms", "decode_ms", fixed(2)), Column("tok/s", "decode_tokens_per_s", fixed(1)),
    Column("x fp32", "speedup_label"),
    Column("IQR", "iqr_pct", lambda v: f"{v:.0f}%"),
    Column("MiB/step", "weight_mb_per_step", fixed(1)), Column("step %BW", "step_bw_fraction", lambda v: f"{v:.0%}"),
    Column("linear ms", "linear_ms", fixed(2)), Column("linear %BW", "linear_bw_fraction", lambda v: f"{v:.0%}"),
    Column("BW GB/s", "read_gb_per_s", fixed(1)),
    Column("roofline ms", "predicted_ms", fixed(2)), Column("prefill tok/s", "prefill_tokens_per_s", fixed(0)),
    Column("check", "flags", lambda v: ",".join(f for f in v if f not in OWN_COLUMN) or "ok", justify="left"),
]


@click.command("bench")
@click.argument("model")
@click.option("--formats", default="fp32,bf16,int8,int4", show_default=True,
              help="Comma-separated: fp32, bf16, int8, int4, int4-asym, nf4, fp8, w8a8 (RTN on the fly, every "
                   "linear including lm_head; all but fp32 with bf16 activations) or paths to quantwise checkpoints. "
                   "A ':unfused' suffix (int4:unfused) runs q/k/v and gate/up as separate kernel calls.")
@click.option("--batch", "batches", default="1,8", show_default=True)
@click.option("--steps", type=click.IntRange(2, 4096), default=16, show_default=True,
              help="Timed decode steps per round.")
@click.option("--prompt", type=click.IntRange(1, 131072), default=32, show_default=True,
              help="Prompt tokens before decode.")
@click.option("--rounds", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Decode rounds pooled at most, stopping once the steps' interquartile range is within 10%.")
@click.option("--attempts", type=click.IntRange(1, 10), default=3, show_default=True,
              help="Measurements of a row that contradicts itself (linear layers slower than the whole step, "
                   "over 100% of the measured bandwidth) before it is printed with a flag.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="cuda: torch's tinygemm INT4 and INT8 weight-only kernels on the GPU.")
@click.option("--engine", type=click.Choice(["llama.cpp"]), default=None,
              help="Also run every checkpoint among --formats (quantwise's, another tool's, or a .gguf) in this "
                   "engine's own benchmark (llama-bench, batch 1, --steps generated tokens after --prompt), "
                   "exported to its format first, and report its speed beside ours.")
@allow_pickle_option
@json_option
def bench_command(model, formats, batches, steps, prompt, rounds, attempts, device, engine, allow_pickle,
                  as_json) -> None:
    """Prefill and decode tokens/s of MODEL in each format at each batch, with the kernel used,
    weight bytes streamed per step as GB/s and as a share of this machine's measured bandwidth.
    Times are medians with their interquartile range; rows that contradict themselves or ran on a
    busy host are flagged in the check column and explained under the table."""
    import torch

    from ..evaluation.bench_checks import host_busy
    from ..evaluation.memory import load_any
    from ..evaluation.throughput import (
        ON_THE_FLY,
        UNFUSED,
        BenchSettings,
        annotate,
        bench_model,
        probe_machine,
        quantize_on_the_fly,
    )
    from ..models.loading import load_model
    from ..reporting.progress import Reporter

    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: this torch build sees no CUDA device (torch.cuda.is_available() is False)")
    labels, batch_sizes = split_list(formats), int_list(batches, "--batch")
    for label in labels:
        fmt = label.removesuffix(UNFUSED)
        if fmt not in ON_THE_FLY and not Path(fmt).exists():  # refuse before minutes of timing
            raise ValueError(f"unknown format or checkpoint {fmt!r}; formats: {', '.join(ON_THE_FLY)}")
    _check_resources(model, labels, batch_sizes, prompt, steps)
    settings = BenchSettings(steps, prompt, PREFILL_TOKENS, rounds, attempts)
    probe = probe_machine(device=device)
    rows = []
    total = len(labels) * len(batch_sizes)
    started = 0
    with Reporter(f"bench {model}") as report:
        def starting(message: str) -> None:  # called as each (format, batch) row starts
            nonlocal started
            report.update(started, total, message)
            started += 1

        for label in labels:
            fmt, fuse = label.removesuffix(UNFUSED), not label.endswith(UNFUSED)
            report.update(started, total, f"{label}: loading")
            if fmt in ON_THE_FLY:
                net = load_model(model, allow_pickle)
                quantize_on_the_fly(net, fmt)
            else:
                net = load_any(fmt)
            activations = torch.float32 if fmt == "fp32" else torch.bfloat16
            rows.extend(bench_model(net, str(model), label, batch_sizes, probe, settings, activations=activations,
                                    fuse=fuse, device=device, progress=starting))
            del net
        report.update(total, total, "done")
    annotate(rows)
    engine_rows = _engine_rows(labels, rows, probe, prompt, steps) if engine else []
    if as_json:
        print_json({"machine": probe, "rows": rows, "engine_rows": engine_rows})
        return
    matmul = "bf16 matmul" if device == "cuda" else "fp32 matmul"
    cores = os.cpu_count() or 1
    busy = f"; other processes kept {probe.other_cores:.1f} of {cores} cores busy meanwhile" \
        if host_busy(probe.other_cores, cores) else ""
    click.echo(f"{device}: {probe.threads} threads, read bandwidth {probe.read_gb_per_s:.1f} GB/s, "
               f"{matmul} {probe.matmul_gflops:.0f} GFLOP/s{busy}")
    print_table(rows, _COLUMNS, title=f"Decode/prefill on this machine: {model}")
    for fmt, kernel in dict.fromkeys((row.format, row.kernel) for row in rows):
        click.echo(f"- {fmt}: {kernel}")
    for row in rows:
        if row.note:
            click.echo(f"- {row.format} batch {row.batch}: {row.note}")
    for row in rows:
        for warning in row.warnings:
            click.echo(f"warning: {row.format} batch {row.batch}: {warning}")
    if engine_rows:
        print_table(engine_rows, _ENGINE_COLUMNS, title="The same checkpoints in llama.cpp (llama-bench, batch 1)")


def _check_resources(model, labels: list[str], batches: list[int], prompt: int, steps: int) -> None:
    """Refuse, before minutes of loading and timing, a run that would not fit in memory or runs
    past the model's positions; every figure is in the message."""
    import torch
    from transformers import AutoModelForCausalLM

    from ..errors import QuantwiseError
    from ..evaluation.bench_memory import MAX_BATCH, bench_memory, check_bench_lengths, check_bench_memory, shape_of
    from ..models.source import resolve_model_dir
    from ..pipeline.skeleton import load_config
    from ..sysinfo import available_memory_mb

    if max(batches) > MAX_BATCH:
        raise QuantwiseError(f"--batch {max(batches)} is above the {MAX_BATCH} bench allows")
    config = load_config(resolve_model_dir(model))
    with torch.device("meta"):  # shapes only: no memory, no random init
        params = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    shape = shape_of(config, params)
    check_bench_lengths(shape, prompt, steps, PREFILL_TOKENS)
    # fp32 rows hold fp32 activations; the others an fp32 load plus a bf16 or packed copy
    largest = max((bench_memory(shape, max(batches), prompt, steps, PREFILL_TOKENS, 4 if label == "fp32" else 2)
                   for label in labels), key=lambda estimate: estimate.total)
    available_mb = available_memory_mb()
    check_bench_memory(largest, None if available_mb is None else int(available_mb * 2**20), f"--batch {max(batches)}")


_ENGINE_COLUMNS = [
    Column("checkpoint", "format", justify="left"), Column("GGUF types", "types", justify="left"),
    Column("decode tok/s", "decode_tokens_per_s", fixed(1)), Column("prefill tok/s", "prefill_tokens_per_s", fixed(0)),
    Column("quantwise tok/s", "quantwise_tokens_per_s", lambda v: "-" if v is None else f"{v:.1f}"),
    Column("engine / quantwise", "ratio", lambda v: "-" if v is None else f"{v:.2f}x"),
    Column("MiB/token", "mib_per_token", fixed(1)), Column("%BW", "bw_fraction", lambda v: f"{v:.0%}"),
]


@dataclass
class EngineRow:
    format: str
    types: str
    decode_tokens_per_s: float
    prefill_tokens_per_s: float
    quantwise_tokens_per_s: float | None
    ratio: float | None
    mib_per_token: float
    bw_fraction: float


def _engine_rows(labels, rows, probe, prompt: int, steps: int) -> list[EngineRow]:
    """llama-bench on each checkpoint label (exported to GGUF in a temporary directory)."""
    import tempfile

    from ..checkpoint.exporters import export
    from ..engines import llama_cpp

    ours = {row.format: row.decode_tokens_per_s for row in rows if row.batch == 1}
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for label in labels:
            path = Path(label)
            if not path.exists():
                continue  # an on-the-fly format: no file for the engine to load
            if path.suffix == ".gguf":
                gguf_file, types = path, "as given"
            else:
                from ..checkpoint.importers import as_native

                result = export(as_native(path), "gguf", Path(tmp) / path.name)
                gguf_file, types = Path(result["out"]) / "model.gguf", ",".join(result["tensor_types"])
            speed = llama_cpp.bench(gguf_file, prompt, steps, threads=probe.threads)
            per_token = llama_cpp.bytes_per_token(gguf_file)
            mine = ours.get(label)
            out.append(EngineRow(label, types, speed.decode_tokens_per_s, speed.prefill_tokens_per_s, mine,
                                 speed.decode_tokens_per_s / mine if mine else None, per_token / 2**20,
                                 per_token * speed.decode_tokens_per_s / (probe.read_gb_per_s * 1e9)))
    return out
