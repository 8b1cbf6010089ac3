"""`quantwise plan` and `quantwise recommend`: the analytic planner from the command line."""

from __future__ import annotations

import sys

import click

from ..hardware import load_catalog, resolve_gpus, support_matrix
from ..models import resolve_arch
from ..planning.assumptions import PlannerAssumptions, parse_overrides
from ..planning.lesson import check_lesson
from ..planning.plan import PlanRequest, plan_grid
from ..planning.precisions import KV_DTYPE_BYTES, PRECISIONS, resolve_precisions
from ..planning.recommend import DEFAULT_RECOMMEND_PRECISIONS, RecommendRequest, recommend
from ..reporting import Column, print_json, print_table
from ..reporting.tables import fixed
from .common import assume_option, gpu_file_option, int_list, json_option, parse_quantity, split_list

_PLAN_COLUMNS = [
    Column("gpu", "gpu", justify="left"), Column("precision", "precision", justify="left"),
    Column("GPUs", "gpus"), Column("batch", "batch"), Column("ctx", "context"),
    Column("weights GB", "weights_gb", fixed(1)), Column("need GB", "memory_gb", fixed(1)),
    Column("have GB", "capacity_gb", fixed(1)), Column("fits", "fits", lambda v: "yes" if v else "NO"),
    Column("max batch", "max_batch"), Column("ms/token", "ms_per_token", fixed(1)),
    Column("tok/s", "tokens_per_s", fixed(0)), Column("bound", "bound", justify="left"),
    Column("$/month", "usd_per_month", fixed(0)),
]


def _assumptions(assume: tuple[str, ...]) -> PlannerAssumptions:
    return PlannerAssumptions().with_overrides(parse_overrides(assume))


def _kv_dtypes(text: str) -> list[str]:
    kinds = split_list(text)
    for kind in kinds:
        if kind not in KV_DTYPE_BYTES:
            raise ValueError(f"unknown KV dtype {kind!r}; known: {', '.join(KV_DTYPE_BYTES)}")
    return kinds


@click.command("plan")
@click.option("--model", default="llama-3-70b", show_default=True,
              help="Preset name, model directory or config.json path.")
@click.option("--gpu", "gpu_names", default="a100-80gb", show_default=True,
              help="Comma-separated GPU ids (see `quantwise hardware`), or 'all'.")
@click.option("--precision", "precision_names", default="fp16,int8,int4", show_default=True,
              help=f"Comma-separated: {', '.join(PRECISIONS)}.")
@click.option("--batch", "batches", default="1,8,32", show_default=True, help="Comma-separated batch sizes.")
@click.option("--context", "contexts", default="4096", show_default=True,
              help="Comma-separated context lengths (tokens of KV cache per sequence).")
@click.option("--tp", type=click.IntRange(1, 64), default=None,
              help="GPUs per replica (tensor parallel). Default: the fewest that fit.")
@click.option("--kv-dtype", default="fp16", show_default=True, help=f"One of {', '.join(KV_DTYPE_BYTES)}.")
@click.option("--quantize-lm-head", is_flag=True, help="Quantize lm_head too (default: kept FP16).")
@gpu_file_option
@assume_option
@json_option
def plan_command(model, gpu_names, precision_names, batches, contexts, tp, kv_dtype, quantize_lm_head,
                 gpu_file, assume, as_json) -> None:
    """Memory, fit, latency per token, throughput, bound and monthly cost for each GPU x precision x
    context x batch."""
    catalog = load_catalog(gpu_file)
    names = None if gpu_names.strip().lower() == "all" else split_list(gpu_names)
    request = PlanRequest(
        arch=resolve_arch(model), gpus=resolve_gpus(catalog, names),
        precisions=resolve_precisions(split_list(precision_names)), batches=int_list(batches, "--batch"),
        contexts=int_list(contexts, "--context"), kv_dtype=_kv_dtypes(kv_dtype)[0], tp=tp,
        quantize_lm_head=quantize_lm_head, assumptions=_assumptions(assume))
    rows = plan_grid(request)
    if as_json:
        print_json(rows)
        return
    print_table(rows, _PLAN_COLUMNS, title=f"Plan for {request.arch.name} ({kv_dtype} KV cache)")
    click.echo("ms/token = max(weights+KV bytes / bandwidth, FLOPs / peak) + TP communication + step overhead; "
               "efficiencies: `quantwise assumptions`.")


_RECOMMEND_COLUMNS = [
    Column("#", "rank"), Column("precision", "precision", justify="left"), Column("method", "method", justify="left"),
    Column("GPUs", "gpus_text", justify="left"), Column("batch", "batch"),
    Column("ms/token", "ms_per_token", fixed(1)), Column("$/month", "usd_per_month", fixed(0)),
    Column("$/Mtok", "usd_per_mtok", fixed(2)), Column("ppl loss", "quality_text", justify="left"),
]

_LESSON_DEFAULTS = dict(model="llama-3-70b", slo_ms=50.0, tokens_per_day="10M")


@click.command("recommend")
@click.option("--model", default=_LESSON_DEFAULTS["model"], show_default=True,
              help="Preset name, model directory or config.json path.")
@click.option("--slo-ms", type=float, default=_LESSON_DEFAULTS["slo_ms"], show_default=True,
              help="Latency target: milliseconds per output token.")
@click.option("--tokens-per-day", default=_LESSON_DEFAULTS["tokens_per_day"], show_default=True,
              help="Output tokens per day, e.g. 10M, 250k, 2B.")
@click.option("--gpus", "gpu_names", default="all", show_default=True, help="Comma-separated GPU ids, or 'all'.")
@click.option("--precision", "precision_names", default=",".join(DEFAULT_RECOMMEND_PRECISIONS), show_default=True,
              help="Comma-separated precisions to consider.")
@click.option("--max-quality-loss", default="5", show_default=True,
              help="Largest acceptable perplexity increase in percent (published priors), or 'none'.")
@click.option("--context", type=click.IntRange(1, 10_000_000), default=4096, show_default=True,
              help="Tokens of KV cache per sequence to plan for.")
@click.option("--kv-dtype", default="fp16", show_default=True, help="Comma-separated KV cache dtypes to consider.")
@click.option("--peak-to-average", type=float, default=1.0, show_default=True,
              help="Size for peak traffic = average x this.")
@click.option("--top", type=click.IntRange(1, 100), default=8, show_default=True)
@click.option("--explain", "explain_count", type=click.IntRange(0, 100), default=3, show_default=True,
              help="How many of the top plans to explain in sentences.")
@gpu_file_option
@assume_option
@json_option
def recommend_command(model, slo_ms, tokens_per_day, gpu_names, precision_names, max_quality_loss, context,
                      kv_dtype, peak_to_average, top, explain_count, gpu_file, assume, as_json) -> None:
    """Rank serving plans (precision, method, GPU type and count, batch) that meet a latency SLO for
    the traffic, cheapest first, and explain the top ones. With no options: the lesson's scenario
    (Llama-3-70B, 10M tokens/day, 50 ms/token, the whole catalogue) and a check of its arithmetic."""
    catalog = load_catalog(gpu_file)
    names = None if gpu_names.strip().lower() == "all" else split_list(gpu_names)
    budget = None if max_quality_loss.strip().lower() == "none" else parse_quantity(max_quality_loss.rstrip("%"))
    assumptions = _assumptions(assume)
    request = RecommendRequest(
        arch=resolve_arch(model), gpus=resolve_gpus(catalog, names), slo_ms=slo_ms,
        tokens_per_day=parse_quantity(tokens_per_day), context=context,
        precisions=resolve_precisions(split_list(precision_names)), kv_dtypes=tuple(_kv_dtypes(kv_dtype)),
        max_quality_loss_pct=budget, peak_to_average=peak_to_average, assumptions=assumptions)
    result = recommend(request, top=top)
    lesson = None
    if model == _LESSON_DEFAULTS["model"] and "a100-80gb" in catalog:
        lesson = check_lesson(request.arch, catalog["a100-80gb"], context, assumptions,
                              support_matrix(list(catalog.values())))
    if as_json:
        print_json({"recommendation": result, "lesson_checks": lesson})
    else:
        _print_recommendation(result, explain_count, lesson)
    if not result.plans:
        click.echo(f"error: no plan meets {slo_ms:g} ms/token for {request.arch.name}: {result.needed}", err=True)
        sys.exit(3)


def _print_recommendation(result, explain_count: int, lesson) -> None:
    from types import SimpleNamespace

    click.echo(f"{result.model}: {result.slo_ms:g} ms/token SLO, {result.tokens_per_day:,.0f} tokens/day "
               f"({result.tokens_per_s_needed:,.0f} tokens/s), {result.context}-token context")
    shown = result.plans or result.closest
    rows = [SimpleNamespace(rank=i + 1, gpus_text=f"{c.replicas}x{c.gpus_per_replica} {c.gpu}",
                            quality_text="?" if c.quality.loss_pct is None else f"+{c.quality.loss_pct:.1f}%"
                            + ("*" if c.quality.proxy_model or c.quality.kind == "rule_of_thumb" else ""),
                            **{k: getattr(c, k) for k in ("precision", "method", "batch", "ms_per_token",
                                                          "usd_per_month", "usd_per_mtok")})
            for i, c in enumerate(shown)]
    title = "Ranked plans (cheapest first)" if result.plans else "No plan meets the SLO; the closest"
    print_table(rows, _RECOMMEND_COLUMNS, title=title)
    click.echo("GPUs = replicas x GPUs per replica. ppl loss: published priors; * = proxy model or rule of thumb.")
    if result.best_per_gpu:
        best = [SimpleNamespace(rank=i + 1, gpus_text=f"{c.replicas}x{c.gpus_per_replica} {c.gpu}",
                                quality_text="?" if c.quality.loss_pct is None else f"+{c.quality.loss_pct:.1f}%",
                                **{k: getattr(c, k) for k in ("precision", "method", "batch", "ms_per_token",
                                                              "usd_per_month", "usd_per_mtok")})
                for i, c in enumerate(result.best_per_gpu)]
        print_table(best, _RECOMMEND_COLUMNS, title="Cheapest plan on each GPU type")
    if result.rejected_for_quality:
        click.echo(f"{result.rejected_for_quality} otherwise feasible plan(s) exceeded the quality budget.")
    for i, candidate in enumerate(shown[:explain_count]):
        click.echo(f"\n#{i + 1} {candidate.precision_label} ({candidate.method}) on "
                   f"{candidate.replicas}x{candidate.gpus_per_replica} {candidate.gpu_name}:")
        for reason in candidate.reasons:
            click.echo(f"  - {reason}")
    if lesson:
        click.echo("\nThe lesson's arithmetic, checked:")
        for check in lesson:
            click.echo(f"  [{check.verdict}] {check.claim}: lesson {check.lesson}, quantwise {check.quantwise}"
                       + (f" ({check.why})" if check.why else ""))
