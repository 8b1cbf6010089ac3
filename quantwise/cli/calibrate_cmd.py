"""`quantwise validate` (the planner against published measurements) and `quantwise calibrate`
(fit its efficiencies to your own measurements, write a profile for plan/recommend --profile)."""

from __future__ import annotations

from types import SimpleNamespace

import click

from ..errors import QuantwiseError
from ..hardware import load_catalog
from ..planning.calibrate import FIT_PARAMETERS, fit_all, load_results, profile_entries
from ..planning.engines import load_engines
from ..planning.profile import load_profile, save_profile
from ..planning.validate import load_measurements, median_abs_error, validate
from ..reporting import Column, print_json, print_table
from .common import gpu_file_option, json_option, split_list
from .plan_cmd import PlannerCommand


def _pct(value) -> str:
    return "no fit" if value is None else f"{value:+.0f}%"


def _num(value) -> str:
    return "-" if value is None else f"{value:,.1f}"


_VALIDATE_COLUMNS = [
    Column("kind", "kind", justify="left"), Column("configuration", "label", justify="left"),
    Column("metric", "metric", justify="left"), Column("published", "published", _num),
    Column("predicted", "predicted", _num), Column("error", "error_pct", _pct),
    Column("split", "split", justify="left"),
]


@click.command("validate", cls=PlannerCommand)
@click.option("--measurements", "path", type=click.Path(dir_okay=False), default=None,
              help="A CSV with the columns of data/published_measurements.csv (default: the packaged table).")
@click.option("--kind", "kinds", default=None, help="Only these kinds (comma-separated).")
@click.option("--profile", "profile_file", type=click.Path(dir_okay=False), default=None,
              help="Efficiencies fitted by `quantwise calibrate`.")
@gpu_file_option
@json_option
def validate_command(path, kinds, profile_file, gpu_file, as_json) -> None:
    """Predicted vs published for every row of the published-measurements table (batch-1 decode,
    max throughput, TP sweeps, static batches, TTFT, prefill), with the error and each row's
    source, and the median absolute error (over all rows, and over rows no efficiency was fitted to)."""
    measurements = load_measurements(path)
    if kinds:
        wanted = set(split_list(kinds))
        measurements = [m for m in measurements if m.kind in wanted]
        if not measurements:
            raise QuantwiseError(f"no measurements of kind {kinds}")
    results = validate(measurements, load_catalog(gpu_file), load_engines(), profile=load_profile(profile_file))
    holdout = [r for r in results if r.split == "holdout"]
    summary = {"median_abs_error_pct": median_abs_error(results),
               "median_abs_error_holdout_pct": median_abs_error(holdout) if holdout else None, "rows": len(results)}
    if as_json:
        print_json({"summary": summary, "rows": results})
        return
    print_table(results, _VALIDATE_COLUMNS, title="The planner against published measurements")
    sources = dict.fromkeys(f"{m.source_title}: {m.source_url}" for m in measurements)
    click.echo("Sources:\n" + "\n".join(f"- {s}" for s in sources))
    click.echo(f"Median |error| over {len(results)} rows: {summary['median_abs_error_pct']:.1f}%"
               + (f"; over the {len(holdout)} held-out rows (no efficiency fitted to them): "
                  f"{summary['median_abs_error_holdout_pct']:.1f}%" if holdout else "")
               + ". 'no fit' rows count as 100%.")


_FIT_COLUMNS = [
    Column("measurement", "label", justify="left"), Column("measured", "measured", _num),
    Column("before", "before", _num), Column("err before", "err_before", _pct),
    Column("after", "after", _num), Column("err after", "err_after", _pct),
]


@click.command("calibrate", cls=PlannerCommand)
@click.argument("results", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default="planner-profile.json",
              show_default=True, help="Where to write the fitted profile.")
@click.option("--model", default=None, help="Model for rows that do not name one (e.g. `quantwise bench` JSON).")
@click.option("--gpu", default=None, help="GPU id for rows that do not name one.")
@click.option("--engine", default=None, help="Engine for rows that do not name one.")
@click.option("--input-len", default=None, help="Prompt tokens for rows without input_len (bench: its --prompt).")
@click.option("--output-len", default=None, help="Answer tokens for rows without output_len (bench: its --steps).")
@click.option("--fit", "fit_names", default=",".join(FIT_PARAMETERS), show_default=True,
              help="Parameters to fit; the others keep the engine's values.")
@click.option("--pool", is_flag=True, help="One fit per engine over all GPUs measured (default: per GPU x engine).")
@gpu_file_option
@json_option
def calibrate_command(results, out_path, model, gpu, engine, input_len, output_len, fit_names, pool, gpu_file,
                      as_json) -> None:
    """Fit the planner's efficiencies (least squares in log space, pulled gently to the engine's
    values) to RESULTS: CSVs of your measurements (model, gpu, engine, precision, [tp], [batch],
    input_len, output_len and one of tokens_per_s, tpot_ms, ttft_ms) or `quantwise bench --json`
    files. Prints measured vs predicted before and after, and writes a profile for --profile."""
    defaults = {k: v for k, v in dict(model=model, gpu=gpu, engine=engine, input_len=input_len,
                                      output_len=output_len).items() if v}
    measurements = load_results(list(results), defaults)
    fits = fit_all(measurements, load_catalog(gpu_file), load_engines(), pool_gpus=pool,
                   parameters=tuple(split_list(fit_names)))
    save_profile(out_path, profile_entries(fits))
    if as_json:
        print_json({"profile": out_path, "fits": fits})
        return
    for result in fits:
        rows = [dict(label=label, measured=m, before=b, after=a,
                     err_before=None if b is None else (b / m - 1) * 100,
                     err_after=None if a is None else (a / m - 1) * 100)
                for label, m, b, a in zip(result.labels, result.measured, result.before, result.after, strict=True)]
        print_table([SimpleNamespace(**r) for r in rows], _FIT_COLUMNS,
                    title=f"{result.engine} on {'every GPU measured' if result.gpu == '*' else result.gpu}: "
                          f"measured vs predicted")
        changed = [f"{k} {result.prior[k]:.4g} -> {v:.4g}" for k, v in result.fitted.items()
                   if abs(v - result.prior[k]) > 1e-3 * max(abs(result.prior[k]), 1e-9)]
        click.echo(f"fitted: {'; '.join(changed) or 'no change'}; rms log error {result.rms_log_error_before:.3f} -> "
                   f"{result.rms_log_error_after:.3f}")
    click.echo(f"profile written to {out_path}: use it with `quantwise plan/recommend/validate --profile {out_path}`")

