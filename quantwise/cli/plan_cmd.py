"""`quantwise plan` and `quantwise recommend`: the analytic planner from the command line."""

from __future__ import annotations

import dataclasses
import sys
from types import SimpleNamespace

import click

from ..errors import QuantwiseError
from ..hardware import load_catalog, resolve_gpus, support_matrix
from ..models import resolve_arch
from ..planning.assumptions import PlannerAssumptions, parse_overrides
from ..planning.engines import load_engines, resolve_engines
from ..planning.lesson import check_lesson
from ..planning.plan import PlanRequest, ServingRequest, plan_grid, serving_grid
from ..planning.precisions import KV_DTYPE_BYTES, PRECISIONS, resolve_precisions
from ..planning.profile import load_profile
from ..planning.recommend import DEFAULT_RECOMMEND_PRECISIONS, RecommendRequest, recommend
from ..planning.serving import DEFAULT_PEAK_FACTOR, Workload
from ..reporting import Column, print_json, print_table
from ..reporting.tables import fixed
from .common import FiniteFloat, assume_option, gpu_file_option, int_list, json_option, parse_quantity, split_list

_PLAN_COLUMNS = [
    Column("gpu", "gpu", justify="left"), Column("precision", "precision", justify="left"),
    Column("KV", "kv_dtype", justify="left"),
    Column("GPUs", "gpus"), Column("batch", "batch"), Column("ctx", "context"),
    Column("weights GB", "weights_gb", fixed(1)), Column("need GB", "memory_gb", fixed(1)),
    Column("have GB", "capacity_gb", fixed(1)), Column("fits", "fits", lambda v: "yes" if v else "NO"),
    Column("max batch", "max_batch"), Column("ms/token", "ms_per_token", fixed(1)),
    Column("tok/s", "tokens_per_s", fixed(0)), Column("bound", "bound", justify="left"),
    Column("$/month", "usd_per_month", fixed(0)),
]


class PlannerCommand(click.Command):
    """A planner command whose option errors (not a number, nan, out of range, unknown option) end
    as one 'error:' line with exit 2 like every other bad input, not click's three-line usage block."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            raise QuantwiseError(exc.format_message() + f" (see `quantwise {info_name} --help`)") from None


def _opt(fmt):
    return lambda v: "-" if v is None else fmt(v)


_SERVING_COLUMNS = [
    Column("gpu", "gpu", justify="left"), Column("precision", "precision", justify="left"),
    Column("engine", "engine", justify="left"), Column("KV", "kv_dtype", justify="left"), Column("TP", "gpus"),
    Column("conc", "concurrency", _opt(str)), Column("binds", "binding", justify="left"),
    Column("TPOT ms", "tpot_ms", _opt(fixed(1))), Column("TTFT ms", "ttft_ms", _opt(fixed(0))),
    Column("TTFT idle", "ttft_unloaded_ms", fixed(0)), Column("tok/s", "tokens_per_s", _opt(fixed(0))),
    Column("tok/s/GPU", "tokens_per_s_per_gpu", _opt(fixed(0))), Column("$/month", "usd_per_month", fixed(0)),
    Column("$/Mtok full", "usd_per_m_output", _opt(fixed(2))),
]


def _varying(rows, columns, optional=("engine", "kv_dtype")):
    """Drop the optional columns whose value is the same on every row (the title states it)."""
    keep = []
    for column in columns:
        if column.field in optional and len({getattr(r, column.field) for r in rows}) <= 1:
            continue
        keep.append(column)
    return keep


def _assumptions(assume: tuple[str, ...]) -> PlannerAssumptions:
    return PlannerAssumptions().with_overrides(parse_overrides(assume))


def _kv_dtypes(text: str) -> list[str]:
    kinds = split_list(text)
    for kind in kinds:
        if kind not in KV_DTYPE_BYTES:
            raise QuantwiseError(f"unknown KV dtype {kind!r}; known: {', '.join(KV_DTYPE_BYTES)}")
    return kinds


def _engines(text: str):
    catalog = load_engines()
    return resolve_engines(catalog, None if text.strip().lower() == "all" else split_list(text))


def _workload(input_len, output_len, requests_per_s, tokens_per_day, peak_factor, ttft_ms, tpot_ms) -> Workload:
    if requests_per_s is not None and tokens_per_day is not None:
        raise QuantwiseError("give traffic as --requests-per-s or --tokens-per-day, not both")
    common = dict(peak_factor=peak_factor, ttft_ms=ttft_ms, tpot_ms=tpot_ms)
    if requests_per_s is not None:
        return Workload(input_len, output_len, requests_per_s, **common)
    return Workload.from_tokens_per_day(parse_quantity(tokens_per_day or "0"), input_len, output_len, **common)


def workload_options(defaults: dict):
    """The workload and target options shared by plan and recommend."""
    def wrap(f):
        options = [
            click.option("--input-len", type=int, default=defaults.get("input_len"), show_default=True,
                         help="Mean prompt tokens per request."),
            click.option("--output-len", type=int, default=defaults.get("output_len"), show_default=True,
                         help="Mean answer tokens per request."),
            click.option("--requests-per-s", type=FiniteFloat(), default=None,
                         help="Daily-average requests per second."),
            click.option("--tokens-per-day", default=None,
                         help="Or traffic as output tokens per day, e.g. 10M, 250k, 2B"
                              + (f" [default: {defaults['tokens_per_day']}]." if defaults.get("tokens_per_day")
                                 else ".")),
            click.option("--peak-factor", type=FiniteFloat(), default=DEFAULT_PEAK_FACTOR, show_default=True,
                         help="Size replicas for the average x this: diurnal LLM traffic peaks at 2-3x its mean."),
            click.option("--ttft-ms", type=FiniteFloat(), default=None, help="Time-to-first-token target (mean), ms."),
            click.option("--tpot-ms", "--slo-ms", "tpot_ms", type=FiniteFloat(), default=defaults.get("tpot_ms"),
                         show_default=True, help="Time-per-output-token target, ms (--slo-ms: the same)."),
            click.option("--engine", "engine_names", default=defaults.get("engine", "vllm"), show_default=True,
                         help=f"Comma-separated engines, or 'all': {', '.join(load_engines())}."),
            click.option("--profile", "profile_file", type=click.Path(dir_okay=False), default=None,
                         help="Efficiencies fitted by `quantwise calibrate` (per GPU x engine)."),
        ]
        for option in reversed(options):
            f = option(f)
        return f
    return wrap


@click.command("plan", cls=PlannerCommand)
@click.option("--model", default="llama-3-70b", show_default=True,
              help="Preset name, model directory or config.json path.")
@click.option("--gpu", "gpu_names", default="a100-80gb", show_default=True,
              help="Comma-separated GPU ids (see `quantwise hardware`), or 'all'.")
@click.option("--precision", "precision_names", default="fp16,int8,int4", show_default=True,
              help=f"Comma-separated: {', '.join(PRECISIONS)}.")
@click.option("--batch", "batches", default="1,8,32", show_default=True,
              help="Comma-separated batch sizes (decode table, without --input-len/--output-len).")
@click.option("--context", "contexts", default="4096", show_default=True,
              help="Comma-separated context lengths (decode table).")
@click.option("--tp", type=click.IntRange(min=1), default=None,
              help="GPUs per replica (tensor parallel). Default: the fewest that fit.")
@click.option("--kv-dtype", default="fp16", show_default=True, help=f"Comma-separated: {', '.join(KV_DTYPE_BYTES)}.")
@click.option("--quantize-lm-head", is_flag=True, help="Quantize lm_head too (default: kept FP16).")
@click.option("--max-throughput", is_flag=True,
              help="Output tokens/s at the memory-limited concurrency, no latency targets (as published "
                   "max-throughput tables report).")
@workload_options({"tokens_per_day": None, "tpot_ms": None})
@gpu_file_option
@assume_option
@json_option
def plan_command(model, gpu_names, precision_names, batches, contexts, tp, kv_dtype, quantize_lm_head,
                 max_throughput, input_len, output_len, requests_per_s, tokens_per_day, peak_factor, ttft_ms,
                 tpot_ms, engine_names, profile_file, gpu_file, assume, as_json) -> None:
    """Memory, fit, latency, throughput and cost for each GPU x precision. With --input-len and
    --output-len: serving a workload (largest concurrency meeting --ttft-ms/--tpot-ms, or the
    memory-limited one with --max-throughput) per engine; otherwise the decode table per batch."""
    catalog = load_catalog(gpu_file)
    names = None if gpu_names.strip().lower() == "all" else split_list(gpu_names)
    arch, gpus = resolve_arch(model), resolve_gpus(catalog, names)
    precisions, kv_dtypes = resolve_precisions(split_list(precision_names)), _kv_dtypes(kv_dtype)
    engines = _engines(engine_names)
    if input_len is None and output_len is None and not max_throughput:
        if len(engines) != 1:
            raise QuantwiseError("the decode table takes one --engine (serving plans with --input-len/--output-len "
                                 "compare several)")
        request = PlanRequest(arch=arch, gpus=gpus, precisions=precisions, batches=int_list(batches, "--batch"),
                              contexts=int_list(contexts, "--context"), tp=tp,
                              quantize_lm_head=quantize_lm_head, assumptions=_assumptions(assume),
                              engine=engines[0], profile=load_profile(profile_file))
        # every KV dtype asked for (the first alone used to be planned, the others silently dropped)
        rows = [row for kv in kv_dtypes for row in plan_grid(dataclasses.replace(request, kv_dtype=kv))]
        refused = [engines[0].refusal(p.id, g) for g in gpus for p in precisions if engines[0].kernel(p.id, g) is None]
        if not rows:
            raise QuantwiseError(refused[0])
        if as_json:
            print_json(rows)
            return
        print_table(rows, _varying(rows, _PLAN_COLUMNS, ("kv_dtype",)),
                    title=f"Plan for {arch.name} on {engines[0].name} ({', '.join(kv_dtypes)} KV cache)")
        click.echo("ms/token = max(weights+KV bytes / bandwidth, FLOPs / peak) + TP communication + step overhead; "
                   "efficiencies: `quantwise engines`, `quantwise assumptions`. Serving a workload: "
                   "--input-len/--output-len.")
        for line in dict.fromkeys(refused):
            click.echo(f"- refused: {line}")
        return
    if input_len is None or output_len is None:
        raise QuantwiseError("serving plans need both --input-len and --output-len")
    workload = _workload(input_len, output_len, requests_per_s, tokens_per_day, peak_factor, ttft_ms, tpot_ms)
    request = ServingRequest(arch, gpus, precisions, engines, workload, tuple(kv_dtypes), tp,
                             max_throughput, quantize_lm_head, _assumptions(assume), load_profile(profile_file))
    rows, refused = serving_grid(request)
    if not rows:
        raise QuantwiseError(refused[0])
    if as_json:
        print_json({"rows": rows, "refused": refused})
        return
    targets = "no latency targets (max throughput)" if max_throughput else \
        ", ".join(f"{name} {value:g} ms" if value else f"no {name} target"
                  for name, value in (("TTFT", ttft_ms), ("TPOT", tpot_ms)))
    engines = sorted({r.engine for r in rows})
    kvs = sorted({r.kv_dtype for r in rows})
    print_table(rows, _varying(rows, _SERVING_COLUMNS),
                title=f"{arch.name}: {input_len:,} in / {output_len:,} out tokens, {targets}; engine "
                      f"{', '.join(engines)}; {', '.join(kvs)} KV")
    click.echo("conc = largest concurrency per replica meeting the targets; binds = what stops it growing; "
               "TTFT at that load and idle; $/Mtok full = one replica fully used.")
    for row in rows:
        if row.concurrency is None:
            click.echo(f"- {row.gpu} {row.precision} ({row.engine}): no plan: {row.why}")
    for line in dict.fromkeys(refused):
        click.echo(f"- refused: {line}")


_RECOMMEND_COLUMNS = [
    Column("#", "rank"), Column("precision", "precision", justify="left"), Column("method", "method", justify="left"),
    Column("engine", "engine", justify="left"), Column("KV", "kv_dtype", justify="left"),
    Column("GPUs", "gpus_text", justify="left"), Column("conc", "concurrency"),
    Column("binds", "binding", justify="left"), Column("TPOT ms", "tpot_ms", fixed(1)),
    Column("TTFT ms", "ttft_ms", fixed(0)), Column("TTFT idle", "ttft_unloaded_ms", fixed(0)),
    Column("$/month", "usd_per_month", fixed(0)), Column("$/M out", "usd_per_m_output", fixed(2)),
    Column("$/M in", "usd_per_m_input", fixed(2)),
    Column("ppl loss", "quality_text", justify="left"),
]

# The lesson's scenario: Llama-3-70B, 10M output tokens/day, 50 ms per output token, 4,096-token
# sequences (here 3,584 prompt + 512 answer tokens).
_LESSON = dict(model="llama-3-70b", tpot_ms=50.0, tokens_per_day="10M", input_len=3584, output_len=512)


def _is_lesson(model, input_len, output_len, requests_per_s, tokens_per_day, tpot_ms, ttft_ms) -> bool:
    return (model == _LESSON["model"] and input_len + output_len == _LESSON["input_len"] + _LESSON["output_len"]
            and requests_per_s is None and parse_quantity(tokens_per_day) == parse_quantity(_LESSON["tokens_per_day"])
            and tpot_ms == _LESSON["tpot_ms"] and ttft_ms is None)


@click.command("recommend", cls=PlannerCommand)
@click.option("--model", default=_LESSON["model"], show_default=True,
              help="Preset name, model directory or config.json path.")
@workload_options(_LESSON)
@click.option("--gpus", "gpu_names", default="all", show_default=True,
              help="Comma-separated GPU ids, or 'all' (datacenter GPUs ranked; see --classes).")
@click.option("--classes", default="datacenter", show_default=True,
              help="GPU classes to rank (datacenter, workstation, consumer); the cheapest plan on the others is "
                   "shown apart. GPUs named in --gpus are always ranked.")
@click.option("--precision", "precision_names", default=",".join(DEFAULT_RECOMMEND_PRECISIONS), show_default=True,
              help="Comma-separated precisions to consider.")
@click.option("--max-quality-loss", default="5", show_default=True,
              help="Largest acceptable perplexity increase in percent (published priors), or 'none'.")
@click.option("--kv-dtype", default="fp16", show_default=True, help="Comma-separated KV cache dtypes to consider.")
@click.option("--top", type=click.IntRange(1, 100), default=8, show_default=True)
@click.option("--explain", "explain_count", type=click.IntRange(0, 100), default=3, show_default=True,
              help="How many of the top plans to explain in sentences.")
@click.option("--lesson", is_flag=True, help="Also check the lesson's arithmetic (shown by default for its scenario).")
@gpu_file_option
@assume_option
@json_option
def recommend_command(model, input_len, output_len, requests_per_s, tokens_per_day, peak_factor, ttft_ms, tpot_ms,
                      engine_names, profile_file, gpu_names, classes, precision_names, max_quality_loss, kv_dtype,
                      top, explain_count, lesson, gpu_file, assume, as_json) -> None:
    """Rank serving plans (precision, method, engine, GPU type, replicas x tensor parallel) that meet
    the TTFT and TPOT targets for the workload at its peak, cheapest first, and explain the top
    ones. With no options: the lesson's scenario (Llama-3-70B, 10M tokens/day, 50 ms/token,
    4,096-token sequences) and a check of its arithmetic."""
    catalog = load_catalog(gpu_file)
    explicit = gpu_names.strip().lower() != "all"
    gpus = resolve_gpus(catalog, split_list(gpu_names) if explicit else None)
    budget = None if max_quality_loss.strip().lower() == "none" else parse_quantity(max_quality_loss.rstrip("%"))
    assumptions = _assumptions(assume)
    if requests_per_s is None and tokens_per_day is None:
        tokens_per_day = _LESSON["tokens_per_day"]
    workload = _workload(input_len, output_len, requests_per_s, tokens_per_day, peak_factor, ttft_ms, tpot_ms)
    rank_classes = tuple({g.gpu_class for g in gpus}) if explicit else tuple(split_list(classes))
    request = RecommendRequest(
        arch=resolve_arch(model), gpus=gpus, workload=workload, engines=_engines(engine_names),
        precisions=resolve_precisions(split_list(precision_names)), kv_dtypes=tuple(_kv_dtypes(kv_dtype)),
        max_quality_loss_pct=budget, assumptions=assumptions, rank_classes=rank_classes,
        profile=load_profile(profile_file))
    result = recommend(request, top=top)
    checks = None
    # the lesson's question is its workload over the whole catalogue: a run on GPUs the user named asks another
    if (lesson or (not explicit and _is_lesson(model, input_len, output_len, requests_per_s, tokens_per_day,
                                               tpot_ms, ttft_ms))) and "a100-80gb" in catalog:
        checks = check_lesson(request.arch, catalog["a100-80gb"], input_len + output_len, assumptions,
                              support_matrix(list(catalog.values())))
    if as_json:
        print_json({"recommendation": result, "lesson_checks": checks})
    else:
        _print_recommendation(result, explain_count, checks, len(request.kv_dtypes) > 1)
    if not result.plans:
        click.echo(f"error: no plan meets the targets for {request.arch.name}: {result.needed}", err=True)
        sys.exit(3)


def _rows(candidates) -> list[SimpleNamespace]:
    return [SimpleNamespace(
        rank=i + 1, gpus_text=f"{c.replicas}x{c.gpus_per_replica} {c.gpu}",
        quality_text="?" if c.quality.loss_pct is None else f"+{c.quality.loss_pct:.1f}%"
        + ("*" if c.quality.proxy_model or c.quality.kind == "rule_of_thumb" else ""),
        **{k: getattr(c, k) for k in ("precision", "method", "engine", "kv_dtype", "concurrency", "binding",
                                      "tpot_ms", "ttft_ms", "ttft_unloaded_ms", "usd_per_month", "usd_per_m_output",
                                      "usd_per_m_input")})
        for i, c in enumerate(candidates)]


def _amount(x: float) -> str:
    """10,000 rather than 1e+04; 0.226 and 3e-06 rather than 0 (three significant figures)."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _describe(w: Workload) -> str:
    targets = [f"TTFT {w.ttft_ms:g} ms" if w.ttft_ms else None, f"TPOT {w.tpot_ms:g} ms" if w.tpot_ms else None]
    return (f"{w.input_len:,} in / {w.output_len:,} out tokens, {_amount(w.requests_per_s)} requests/s "
            f"({_amount(w.output_tokens_per_day)} output tokens/day; peak {w.peak_factor:g}x = "
            f"{_amount(w.peak_output_tokens_per_s)} tokens/s); " + (", ".join(t for t in targets if t) or "no targets"))


# Why a plan on an unranked GPU class is shown apart (datacenter GPUs need no caveat).
_CLASS_CAVEATS = {
    "consumer": "consumer cards are not rentable at scale from major clouds and NVIDIA's GeForce driver licence "
                "excludes datacenter deployment",
    "workstation": "workstation cards are offered by few clouds",
}


def _print_recommendation(result, explain_count: int, lesson, several_kv: bool) -> None:
    click.echo(f"{result.model}: {_describe(result.workload)}")
    shown = result.plans or result.closest
    rows = _rows(shown)
    title = "Ranked plans (cheapest first)" if result.plans else "No plan meets the targets; the closest"
    print_table(rows, _varying(rows, _RECOMMEND_COLUMNS, ("engine",) + (() if several_kv else ("kv_dtype",))),
                title=title)
    click.echo("GPUs = replicas x GPUs per replica; conc = concurrent sequences per replica; binds = what caps it; "
               "TTFT at that load and idle. ppl loss: published priors; * = proxy model or rule of thumb.")
    if result.best_per_gpu:
        best = _rows(result.best_per_gpu)
        print_table(best, _varying(best, _RECOMMEND_COLUMNS, ("engine", "kv_dtype")),
                    title="Cheapest plan on each GPU type")
    if result.other_class_option:
        c = result.other_class_option
        caveat = _CLASS_CAVEATS.get(c.gpu_class)
        click.echo(f"Cheaper on a {c.gpu_class} GPU: {c.precision_label} on {c.replicas}x{c.gpus_per_replica} "
                   f"{c.gpu_name} at ${c.usd_per_month:,.0f}/month"
                   + (", a price the catalogue marks unconfirmed" if c.price_unconfirmed else "")
                   + f" (availability: {c.availability})." + (f" Caveat: {caveat}." if caveat else ""))
    if result.rejected_for_quality:
        click.echo(f"{result.rejected_for_quality} otherwise feasible plan(s) exceeded the quality budget or have "
                   f"no published quality prior (e.g. FP4; pass --max-quality-loss none to see them).")
    for i, candidate in enumerate(shown[:explain_count]):
        label = f"({candidate.method}) " if candidate.method else ""
        click.echo(f"\n#{i + 1} {candidate.precision_label} {label}on {candidate.replicas}x"
                   f"{candidate.gpus_per_replica} {candidate.gpu_name} with {candidate.engine_name}:")
        for reason in candidate.reasons:
            click.echo(f"  - {reason}")
    if lesson:
        click.echo("\nThe lesson's arithmetic, checked:")
        for check in lesson:
            click.echo(f"  [{check.verdict}] {check.claim}: lesson {check.lesson}, quantwise {check.quantwise}"
                       + (f" ({check.why})" if check.why else ""))
