"""`quantwise eval` and `quantwise inspect`."""

from __future__ import annotations

from pathlib import Path

import click

from ..reporting import Column, print_json, print_table
from ..reporting.tables import fixed
from .common import allow_pickle_option, encoding_option, json_option

_QUALITY_COLUMNS = [
    Column("model", "name", justify="left"), Column("ppl", "perplexity", fixed(3)),
    Column("bits/byte", "bits_per_byte", fixed(4)), Column("KL mean", "kl_mean", fixed(5)),
    Column("KL p99", "kl_p99", fixed(4)), Column("top-1 agree", "top1_agreement", lambda v: f"{v:.2%}"),
    Column("tokens", "scored_tokens"),
]


def eval_tokens(model_dir: Path, text_path: str, max_tokens: int, encoding: str | None = None):
    """(ids, bos id or None, UTF-8 bytes of the scored text) with the reference's tokenizer."""
    from ..calibration.decoding import read_text_file, warn_if_unlike_language

    path = Path(text_path)
    if not path.exists():
        raise FileNotFoundError(f"no evaluation text at {path}")
    text = read_text_file(path, encoding)
    warn_if_unlike_language(text, str(path))
    if not text.strip():
        raise ValueError(f"evaluation text {path} is empty")
    from ..models.tokenizer import load_text_tokenizer

    tokenizer = load_text_tokenizer(model_dir)
    ids = tokenizer.ids(text)[:max_tokens]
    return ids, tokenizer.bos_id, len(tokenizer.decode(ids.tolist()).encode("utf-8"))


@click.command("eval")
@click.argument("reference")
@click.argument("checkpoints", nargs=-1)
@click.option("--text", "text_path", required=True, help="Evaluation text file (held out from calibration).")
@click.option("--max-tokens", type=click.IntRange(2), default=8192, show_default=True)
@click.option("--window", type=click.IntRange(2), default=1024, show_default=True)
@click.option("--stride", type=click.IntRange(1), default=512, show_default=True)
@click.option("--cache", "cache_file", type=click.Path(dir_okay=False), default=None,
              help="Reference log-probabilities cache (safetensors): reused when text, window and stride match.")
@click.option("--memory", is_flag=True, help="Also measure size on disk, bits per weight and peak RSS of each model.")
@click.option("--kernels", is_flag=True,
              help="Also evaluate each checkpoint through the packed CPU kernels `quantwise bench` times (bf16 "
                   "inputs into INT4/INT8/W8A8 kernels, q/k/v and gate/up fused), as extra '[kernels] NAME' rows.")
@allow_pickle_option
@encoding_option
@json_option
def eval_command(reference, checkpoints, text_path, max_tokens, window, stride, cache_file, memory, kernels,
                 allow_pickle, encoding, as_json):
    """Perplexity, bits per byte, KL divergence and top-1 agreement of CHECKPOINTS against REFERENCE
    (a model directory or short name), on one text, in one table."""
    from ..evaluation.compare import compare_models
    from ..evaluation.memory import inspect_checkpoint, load_any, measure_rss
    from ..models.footprint import arch_of, eval_footprint_mb, require_memory
    from ..models.source import resolve_model_dir
    from ..sysinfo import available_memory_mb

    model_dir = resolve_model_dir(reference)
    ids, bos, text_bytes = eval_tokens(model_dir, text_path, max_tokens, encoding)
    arch = arch_of(model_dir)
    if arch is not None:
        models = 1 + len(checkpoints) * (2 if kernels else 1)
        require_memory(eval_footprint_mb(arch, models, min(window, ids.numel())), f"eval of {models} models",
                       "evaluate fewer checkpoints per run (the reference cache, --cache, avoids recomputing it)",
                       available_memory_mb())
    candidates = {str(c): load_any(c) for c in checkpoints}
    if kernels:
        from ..runtime.kernels import use_packed_kernels

        for c in checkpoints:
            served = load_any(c)
            use_packed_kernels(served)
            candidates[f"[kernels] {c}"] = served
    key, usable = None, False
    if cache_file:
        from ..checkpoint.atomic import ensure_writable
        from ..checkpoint.manifest import weights_hash
        from ..evaluation.compare import reference_cache_key, reference_cache_status

        key = reference_cache_key(weights_hash(model_dir)[:16], ids, window, stride, bos)
        usable, why_not = reference_cache_status(Path(cache_file), key)
        if why_not:
            click.echo(f"note: {why_not}; recomputing the reference", err=True)
        if not usable:
            ensure_writable(Path(cache_file))  # before minutes of work, not after
    ref_model = None if usable else load_any(reference, allow_pickle=allow_pickle)
    from ..reporting.progress import Reporter

    with Reporter("eval") as report:
        rows = compare_models(ref_model, candidates, ids, window, stride, bos, text_bytes, str(reference),
                              Path(cache_file) if cache_file else None, key, progress=report.update)
    memory_rows = []
    if memory:
        for name in [str(reference), *map(str, checkpoints)]:
            path = model_dir if name == str(reference) else Path(name)
            report = inspect_checkpoint(path)
            report.peak_rss_load_mb, report.peak_rss_run_mb = measure_rss(name, allow_pickle=allow_pickle)
            memory_rows.append(report)
    if as_json:
        print_json({"quality": rows, "memory": memory_rows})
        return
    print_table(rows, _QUALITY_COLUMNS, title=f"Quality vs {reference} on {Path(text_path).name} "
                                              f"(window {window}, stride {stride})")
    if memory_rows:
        _print_memory(memory_rows)


def _print_memory(reports) -> None:
    columns = [Column("model", "path", justify="left"), Column("disk MB", "disk_bytes", lambda v: f"{v / 2**20:,.1f}"),
               Column("linear bits/w", "linear_bits_per_weight", fixed(3)),
               Column("load RSS MB", "peak_rss_load_mb", fixed(0)), Column("run RSS MB", "peak_rss_run_mb", fixed(0))]
    print_table(reports, columns, title="Memory")


@click.command("inspect")
@click.argument("model")
@click.option("--rss/--no-rss", default=True, show_default=True, help="Measure peak RSS in a fresh process.")
@click.option("--verify", is_flag=True, help="Read every weight file: hashes against the manifest, every tensor "
                                             "present with its shape and free of NaN/Inf.")
@json_option
def inspect_command(model, rss, verify, as_json):
    """Bytes per dtype, bits per weight of the linear layers, size on disk and peak RSS of MODEL
    (a quantwise checkpoint, model directory or short name)."""
    from ..checkpoint.importers import as_native, detect
    from ..evaluation.memory import inspect_checkpoint, measure_rss
    from ..models.source import resolve_model_dir

    path = as_native(model) if detect(model) or Path(model, "quantwise.json").is_file() else resolve_model_dir(model)
    report = inspect_checkpoint(path)
    if verify:
        report.verified_files = _verify(path)
    if rss:
        report.peak_rss_load_mb, report.peak_rss_run_mb = measure_rss(model)
    if as_json:
        print_json(report)
        return
    _print_memory([report])
    for dtype, size in sorted(report.tensor_bytes_by_dtype.items()):
        click.echo(f"  {dtype}: {size / 2**20:,.1f} MB")
    if verify:
        click.echo(f"verified: {report.verified_files} weight files read in full; contents match the manifest, "
                   "every tensor present and finite")


def _verify(path: Path) -> int:
    """Read everything a load reads, with every check on; the number of weight files read."""
    from ..checkpoint import is_native_checkpoint
    from ..checkpoint.native import NativeCheckpoint
    from ..models.loading import load_model

    if is_native_checkpoint(path):
        return NativeCheckpoint.open(path).verify()
    load_model(path)
    return len(list(Path(path).glob("*.safetensors")))
