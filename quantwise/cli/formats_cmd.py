"""`quantwise formats`: bits per weight and SQNR of every format on synthetic weights."""

from __future__ import annotations

import click

from ..reporting import Column, print_json, print_table
from ..reporting.tables import fixed

_COLUMNS = [
    Column("format", "format", justify="left"),
    Column("scales", "granularity", justify="left"),
    Column("group", "group_size", lambda v: "-" if v is None else str(v)),
    Column("bits/w", "bits_per_weight", fixed(3)),
    Column("gauss dB", "sqnr_gaussian_db", fixed(2)),
    Column("t(3) dB", "sqnr_student_t_db", fixed(2)),
    Column("outlier dB", "sqnr_outliers_db", fixed(2)),
]


@click.command("formats")
@click.option("--format", "formats", multiple=True, metavar="NAME",
              help="Format to include (repeatable), e.g. int4-g128-asym, nf4-g64-dq, fp8_e4m3-channel. "
                   "Default: the study list (see README).")
@click.option("--rows", default=1024, show_default=True, type=click.IntRange(1, 16384))
@click.option("--cols", default=1024, show_default=True, type=click.IntRange(1, 16384))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print rows as a JSON list.")
def formats_command(formats: tuple[str, ...], rows: int, cols: int, seed: int, as_json: bool) -> None:
    """Bits per weight (from real packed storage) and SQNR of each format on Gaussian,
    heavy-tailed (Student-t, 3 dof) and outlier-channel weight matrices."""
    from ..evaluation.format_study import STUDY_FORMATS, run_format_study  # torch: load only when run
    from ..reporting.progress import Reporter

    with Reporter("formats") as report:
        results = run_format_study(list(formats) or STUDY_FORMATS, rows=rows, cols=cols, seed=seed,
                                   progress=report.update)
    if as_json:
        print_json(results)
        return
    print_table(results, _COLUMNS, title=f"Formats on synthetic {rows}x{cols} weights (seed {seed})")
    click.echo("SQNR in dB, higher is better; bits/w counts packed data, scales and zero points as stored.")
