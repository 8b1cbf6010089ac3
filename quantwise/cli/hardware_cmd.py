"""`quantwise hardware`, `quantwise models` and `quantwise assumptions`: the data behind the planner."""

from __future__ import annotations

import dataclasses

import click

from ..hardware import load_catalog, support_matrix
from ..models import load_presets, param_breakdown, resolve_arch
from ..planning.assumptions import PlannerAssumptions, reasons
from ..planning.engines import load_engines
from ..reporting import Column, print_json, print_table
from ..reporting.tables import fixed
from .common import gpu_file_option, json_option


def _rate(value):
    return "none" if value is None else f"{value:g}"


_GPU_COLUMNS = [
    Column("id", "id", justify="left"), Column("class", "gpu_class", justify="left"),
    Column("avail", "availability", justify="left"), Column("mem GB", "memory_gb", lambda v: f"{v:g}"),
    Column("TB/s", "bandwidth_tbps", lambda v: f"{v:g}"), Column("FP16", "fp16_tflops", _rate),
    Column("FP8", "fp8_tflops", _rate), Column("INT8", "int8_tops", _rate), Column("INT4", "int4_tops", _rate),
    Column("FP4", "fp4_tflops", _rate),
    Column("link GB/s", "interconnect_gbps", lambda v: f"{v:g}"), Column("$/h", "price_per_hour", fixed(2)),
    Column("price source", "price_source", justify="left"),
]


@click.command("hardware")
@gpu_file_option
@json_option
def hardware_command(gpu_file: str | None, as_json: bool) -> None:
    """The GPU catalogue (dense tensor-core TFLOP/s, sourced) and the format x GPU support matrix
    derived from it, with the places where the lesson's own matrix disagrees."""
    gpus = list(load_catalog(gpu_file).values())
    cells = support_matrix(gpus)
    if as_json:
        print_json({"gpus": gpus, "support": cells})
        return
    print_table(gpus, _GPU_COLUMNS, title="GPU catalogue (dense tensor-core TFLOP/s / TOP/s; none = no path)")
    unconfirmed = [f"{g.id}: {', '.join(g.unconfirmed)}" for g in gpus if g.unconfirmed]
    if unconfirmed:
        click.echo("Unconfirmed figures: " + "; ".join(unconfirmed))
    formats = sorted({c.format for c in cells}, key=[c.format for c in cells].index)
    by_key = {(c.format, c.gpu): c for c in cells}
    rows = [dict(format=f, **{g.id: _cell_text(by_key[(f, g.id)]) for g in gpus}) for f in formats]
    from rich.table import Table

    from ..reporting.tables import make_console
    table = Table(title="Support matrix: native tensor cores (N) or dequantize to FP16 (D); ! = lesson disagrees")
    table.add_column("format", justify="left")
    for g in gpus:
        table.add_column(g.id)
    for row in rows:
        table.add_row(*row.values())
    make_console().print(table)
    for c in cells:
        if c.disagrees_with_lesson:
            note = " (figure unconfirmed)" if c.unconfirmed else ""
            click.echo(f"- lesson says {c.format} on {c.gpu} is '{c.lesson_says}'; "
                       f"the data says '{c.path.value}'{note}")


def _cell_text(cell) -> str:
    mark = "N" if cell.path.value == "native" else "D"
    return mark + ("!" if cell.disagrees_with_lesson else "")


@click.command("models")
@click.argument("model", required=False)
@json_option
def models_command(model: str | None, as_json: bool) -> None:
    """Presets (or one MODEL: preset name or path to config.json) with parameter counts per component."""
    archs = [resolve_arch(model)] if model else list(load_presets().values())
    rows = []
    for arch in archs:
        p = param_breakdown(arch)
        rows.append(dict(model=arch.name, model_type=arch.model_type, layers=arch.layers, hidden=arch.hidden,
                         heads=arch.heads, kv_heads=arch.kv_heads, head_dim=arch.head_dim,
                         embeddings=p.embeddings, attention=p.attention, mlp=p.mlp, lm_head=p.lm_head,
                         other=p.norms_biases + p.positions + p.router, total=p.total, active=p.active,
                         published_b=arch.published_params_b, kv_bytes_per_token_fp16=arch.kv_values_per_token * 2))
    if as_json:
        print_json(rows)
        return
    from types import SimpleNamespace
    billions = lambda v: f"{v / 1e9:.3f}"  # noqa: E731
    columns = [Column("model", "model", justify="left"), Column("type", "model_type", justify="left"),
               Column("embed B", "embeddings", billions), Column("attn B", "attention", billions),
               Column("mlp B", "mlp", billions), Column("lm_head B", "lm_head", billions),
               Column("total B", "total", billions), Column("active B", "active", billions),
               Column("published B", "published_b", lambda v: "-" if v is None else f"{v:g}"),
               Column("KV B/token", "kv_bytes_per_token_fp16", lambda v: f"{v:,}")]
    print_table([SimpleNamespace(**r) for r in rows], columns, title="Model architectures (parameters in billions)")


@click.command("assumptions")
@json_option
def assumptions_command(as_json: bool) -> None:
    """The planner's named efficiency factors and overheads with their defaults and reasons (see
    --assume; engines override some of them: `quantwise engines`)."""
    values = dataclasses.asdict(PlannerAssumptions())
    why = reasons()
    if as_json:
        print_json({key: {"value": value, "why": why[key]} for key, value in values.items()})
        return
    for key, value in values.items():
        click.echo(f"{key} = {value}\n    {why[key]}")


@click.command("engines")
@json_option
def engines_command(as_json: bool) -> None:
    """Serving engines the planner models (data/engines.csv): efficiencies, overheads, step budget,
    and the precisions each runs with fast (or slow) kernels per GPU generation, with sources."""
    engines = list(load_engines().values())
    if as_json:
        print_json(engines)
        return
    from types import SimpleNamespace

    def kernels(table: dict[str, tuple[str, ...]]) -> str:
        return "; ".join(f"{p}: {'/'.join(a)}" for p, a in table.items()) or "-"

    rows = [SimpleNamespace(id=e.id, scheduler=e.scheduler, bw=e.bandwidth_efficiency,
                            wo_bw=e.weight_only_bandwidth_efficiency, compute=e.compute_efficiency,
                            overhead=e.step_overhead_s * 1e3,
                            layer=e.layer_overhead_s * 1e6, budget=e.max_batched_tokens) for e in engines]
    columns = [Column("engine", "id", justify="left"), Column("scheduler", "scheduler", justify="left"),
               Column("BW eff", "bw", fixed(2)), Column("W-only BW", "wo_bw", fixed(2)),
               Column("compute eff", "compute", fixed(2)), Column("step ms", "overhead", fixed(1)),
               Column("layer us", "layer", fixed(0)), Column("step tokens", "budget")]
    print_table(rows, columns, title="Serving engines (efficiencies are shares of the GPU's peaks)")
    for e in engines:
        click.echo(f"- {e.name}: fast kernels {kernels(e.fast)}; slow {kernels(e.slow)}\n"
                   f"    efficiencies: {e.efficiency_source}\n    kernels: {e.kernel_source}")
