"""`quantwise sensitivity`: per-layer KL ranking, heatmap, and a mixed-precision plan."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from ..reporting import Column, print_json, print_table
from ..reporting.tables import fixed
from .common import FiniteFloat, allow_pickle_option, encoding_option, json_option


@click.command("sensitivity")
@click.argument("model")
@click.option("--text", "text_path", required=True, help="Evaluation text (a few thousand tokens suffice).")
@click.option("--format", "fmt", default="int4-g128", show_default=True, help="Format each layer is tried in.")
@click.option("--max-tokens", type=click.IntRange(16), default=1024, show_default=True)
@click.option("--window", type=click.IntRange(8), default=256, show_default=True)
@click.option("--heatmap", type=click.Path(dir_okay=False), default=None, help="Write a PNG heatmap here.")
@click.option("--budget", type=FiniteFloat(), default=None,
              help="Average bits/weight for a mixed-precision plan, e.g. 4.5.")
@click.option("--high", default="int8-channel", show_default=True, help="Format of the layers the plan upgrades.")
@click.option("--plan-out", type=click.Path(dir_okay=False), default=None,
              help="Write the plan (JSON) for `quantwise quantize --plan`.")
@click.option("--top", type=click.IntRange(1), default=15, show_default=True)
@allow_pickle_option
@encoding_option
@json_option
def sensitivity_command(model, text_path, fmt, max_tokens, window, heatmap, budget, high, plan_out, top, allow_pickle,
                        encoding, as_json):
    """Quantize one linear at a time (RTN in --format, the rest full precision), rank the layers by
    the KL divergence that causes, and with --budget build a mixed-precision plan, checked against
    the uniform format of the same size."""
    from ..checkpoint.atomic import atomic_write_text, ensure_writable
    from ..evaluation.sensitivity import layer_sensitivity, mixed_precision_plan, plan_kl, target_linears
    from ..formats import bits_per_weight, parse_spec
    from ..models.loading import load_model
    from ..models.source import resolve_model_dir
    from .eval_cmd import eval_tokens

    for output in (heatmap, plan_out):
        if output:
            ensure_writable(Path(output))  # before minutes of work, not after
    model_dir = resolve_model_dir(model)
    ids, bos, _ = eval_tokens(model_dir, text_path, max_tokens, encoding)
    net = load_model(model_dir, allow_pickle)
    from ..reporting.progress import Reporter

    with Reporter(f"sensitivity {fmt}") as report:
        rows = layer_sensitivity(net, ids, fmt, window, progress=report.update, bos_id=bos)
    result = {"format": fmt, "layers": rows}
    if heatmap:
        from ..reporting.plots import sensitivity_heatmap

        result["heatmap"] = str(sensitivity_heatmap(rows, Path(heatmap), f"{model}: KL of {fmt} one layer at a time"))
    if budget is not None:
        shapes = {name: tuple(m.weight.shape) for name, m in target_linears(net)}
        plan = mixed_precision_plan(rows, shapes, fmt, high, budget)
        uniform = _uniform_alternative(fmt, plan.achieved_bpw, shapes, parse_spec, bits_per_weight)
        mixed_kl = plan_kl(net, ids, plan.format_for, window, bos)
        uniform_kl = plan_kl(net, ids, lambda _name: uniform, window, bos)
        result["plan"] = plan
        result["check"] = {"mixed_kl": mixed_kl, "uniform_format": uniform, "uniform_kl": uniform_kl,
                           "mixed_beats_uniform": mixed_kl < uniform_kl}
        if plan_out:
            atomic_write_text(plan_out, json.dumps(dataclasses.asdict(plan), indent=2))
    if as_json:
        print_json(result)
        return
    columns = [Column("layer", "name", justify="left"), Column("params", "params", lambda v: f"{v:,}"),
               Column("KL", "kl", fixed(5)), Column("ppl x", "ppl_ratio", fixed(4))]
    print_table(rows[:top], columns, title=f"Most sensitive layers in {fmt} (one at a time)")
    _print_module_table(rows)
    if heatmap:
        click.echo(f"heatmap: {result['heatmap']}")
    if budget is not None:
        check = result["check"]
        click.echo(f"plan: {len(plan.overrides)} layer(s) in {high}, the rest {fmt}: {plan.achieved_bpw:.3f} "
                   f"bits/weight (budget {budget}); KL {check['mixed_kl']:.5f} vs uniform {check['uniform_format']} "
                   f"KL {check['uniform_kl']:.5f}: {'mixed wins' if check['mixed_beats_uniform'] else 'uniform wins'}")
        if plan_out:
            click.echo(f"plan written to {plan_out}")


def _uniform_alternative(fmt, achieved_bpw, shapes, parse_spec, bits_per_weight) -> str:
    """The same element format with the group size whose size is closest to the plan's, not larger."""
    base = fmt.split("-")[0]
    suffix = "-asym" if not parse_spec(fmt).symmetric else ""
    best, best_bpw = fmt, -1.0
    total = sum(r * c for r, c in shapes.values())
    for group in (256, 128, 64, 32, 16):
        candidate = f"{base}-g{group}{suffix}"
        bpw = sum(bits_per_weight(parse_spec(candidate), r, c) * r * c for r, c in shapes.values()) / total
        if best_bpw < bpw <= achieved_bpw + 1e-9:
            best, best_bpw = candidate, bpw
    return best


def _print_module_table(rows) -> None:
    from collections import defaultdict

    from rich.table import Table

    from ..reporting.tables import make_console

    by = defaultdict(dict)
    for r in rows:
        if r.block is not None:
            by[r.block][r.module] = r.kl
    modules = sorted({m for cells in by.values() for m in cells})
    table = Table(title="KL by block x module")
    table.add_column("block")
    for m in modules:
        table.add_column(m)
    for block in sorted(by):
        table.add_row(str(block), *(f"{by[block].get(m, float('nan')):.4f}" for m in modules))
    make_console().print(table)
