"""Quantize a causal LM block by block (the GPTQ reference's sequential scheme):

  capture block 0's inputs -> for each block: load its weights, observe its linears' inputs,
  method.prepare_block + quantize_linear, recompute its outputs with the quantized weights, save it
  -> those outputs are the next block's inputs.

Only one block's weights are in memory at a time. After each block the checkpoint shard and the
next inputs are written atomically, so an interrupted run resumes at the next block and produces
the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils._pytree import tree_map

from .. import __version__
from ..calibration import CalibrationConfig, calibration_hash, load_texts, mix_texts, token_samples
from ..checkpoint.atomic import atomic_save_tensors, atomic_write_json
from ..checkpoint.layout import MANIFEST, WORK, copy_model_files, layer_file, rest_file
from ..checkpoint.manifest import Manifest, content_hashes, weights_hash, write_manifest
from ..checkpoint.ownership import OutputDirError, claim_output
from ..checkpoint.serialize import qlinear_to_tensors
from ..formats import parse_spec
from ..models.footprint import arch_of, quantize_footprint_mb, require_memory
from ..models.source import TensorSource, resolve_model_dir
from ..models.tokenizer import load_text_tokenizer
from ..runtime.qlinear import QuantizedLinear
from ..sysinfo import available_memory_mb, current_rss_mb, peak_rss_mb, reuse_freed_memory, trim_heap
from .activations import DiskActivations, acts_dir, batch_mb, spill
from .block_quant import BlockTimes, quantize_block
from .memory import MemoryParts, block_parts, tensor_mb
from .replay import ReplayCache, trace_block
from .skeleton import build_block, build_skeleton, resolve_compute_dtype

# Free heap kept between blocks, for the next block's same-shaped tensors. SmolLM2 frees 300-540 MiB
# a block: trimming it all cost 6 s of a 101 s GPTQ run in page faults, keeping it raised the peak
# 924 -> 986 MiB. Blocks of 8B-sized models free more than this and are still trimmed.
HEAP_KEPT_BETWEEN_BLOCKS_MB = 1024


@dataclass(frozen=True)
class QuantizeJob:
    model: str
    method_name: str
    method: object                      # a config from quantwise.methods
    calibration: CalibrationConfig
    out: Path
    batch_size: int = 4
    allow_pickle: bool = False
    format_overrides: tuple[tuple[str, str], ...] = ()   # (full linear name, format): a mixed-precision plan
    quantize_lm_head: bool = False      # RTN in the method's format; embeddings stay high precision
    overwrite: bool = False             # clear an --out that holds another run's files
    offload_activations: bool = False   # calibration hidden states on disk, one batch in memory at a time
    # Precision of the calibration forward passes (`run_block`): auto, float32 or bfloat16. Auto (bf16
    # on a bf16 CPU) by default: on Gemma-3-270M GPTQ INT4 over five calibration seeds, bf16 minus
    # float32 perplexity was +0.12 +- 0.14 at g128 and +0.01 +- 0.05 at g64 (paired by seed), for 22%
    # less wall time (`benchmarks/results/2026-11-29-gptq-vs-peers-gemma-3-270m-compute-dtype-*.txt`).
    compute_dtype: str = "auto"


@dataclass
class LayerReport:
    block: int
    name: str
    format: str
    relative_error: float               # ||X W^T - X W_q^T|| / ||X W^T|| on calibration inputs


@dataclass
class QuantizeReport:
    out: str
    model: str
    method: str
    blocks: int
    seconds: float
    peak_rss_mb: float
    baseline_rss_mb: float              # the process before the job (interpreter, torch, transformers)
    resumed_from: int
    calibration_hash: str
    compute_dtype: str = "float32"      # of the calibration forward passes, as resolved on this host
    layers: list[LayerReport] = field(default_factory=list)
    times: BlockTimes = field(default_factory=BlockTimes)   # this run's blocks, summed per phase
    block_times: list[BlockTimes] = field(default_factory=list)
    memory: MemoryParts = field(default_factory=MemoryParts)  # what the run needs; budget = 1.5x the sum


def _one_sample(hidden: torch.Tensor, kwargs: dict) -> tuple[torch.Tensor, dict]:
    """The first sequence of a calibration batch, with the batch-sized kwargs cut to match: the
    trace finds the block's structure, which no batch size changes (a whole batch cost 5% of a run)."""
    batch = hidden.shape[0]
    if batch == 1:
        return hidden, kwargs
    first = tree_map(lambda t: t[:1] if isinstance(t, torch.Tensor) and t.dim() and t.shape[0] == batch else t,
                     kwargs)
    return hidden[:1], first


def _job_fingerprint(job: QuantizeJob, calib_hash: str, model_dir: Path) -> str:
    payload = json.dumps({"model": str(model_dir), "method": job.method_name, "config": repr(job.method),
                          "overrides": list(job.format_overrides), "lm_head": job.quantize_lm_head,
                          "calib": calib_hash, "version": __version__,
                          "offload": job.offload_activations,
                          "compute_dtype": job.compute_dtype}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def job_arguments(job: QuantizeJob) -> dict:
    """What determines the checkpoint's bytes, as recorded in the manifest: a resume or a re-run
    into the same directory must ask for exactly this."""
    return _jsonable_value({"model": str(job.model), "method": job.method_name, "config": _jsonable(job.method),
                            "calibration": dataclasses.asdict(job.calibration), "batch_size": job.batch_size,
                            "format_overrides": dict(job.format_overrides),
                            "quantize_lm_head": job.quantize_lm_head,
                            "compute_dtype": job.compute_dtype})


def _check_plan(job: QuantizeJob, source: TensorSource, layers_prefix: str) -> None:
    """Before any work: a plan naming a layer the model does not have is a plan for another model,
    and a group wider than a layer's rows is a mistake (it would pad every row to the group)."""
    names = set(source.names())
    unknown = [name for name, _ in job.format_overrides if f"{name}.weight" not in names]
    if unknown:
        raise ValueError(f"the plan names layers this model does not have: {', '.join(unknown[:3])}"
                         + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
                         + " (was it made for another model?)")
    overrides = dict(job.format_overrides)
    default = getattr(job.method, "format", None)
    for name in source.names():
        if not (name.startswith(layers_prefix) and name.endswith(".weight")):
            continue
        layer = name.removesuffix(".weight")
        fmt = overrides.get(layer, default)
        shape = source.shape(name)
        if fmt is None or len(shape) != 2:
            continue
        group = parse_spec(fmt).group_size
        if group is not None and group > shape[1]:
            raise ValueError(f"group size {group} is wider than {layer}'s {shape[1]} inputs; use a group size "
                             f"of at most {shape[1]}, or channel granularity")


def _check_memory(job: QuantizeJob, model_dir: Path) -> None:
    arch = arch_of(model_dir)
    if arch is None:
        return
    cfg = job.calibration
    needed = quantize_footprint_mb(arch, cfg.samples, cfg.seq_len, job.batch_size, job.offload_activations,
                                   getattr(job.method, "needs_hessian", True), _reference_bytes(job))
    require_memory(needed, f"quantizing {arch.layers} blocks with {cfg.samples} x {cfg.seq_len} calibration tokens",
                   "use fewer --samples or a shorter --seq-len" + ("" if job.offload_activations else
                                                                  ", or --offload-activations"),
                   available_memory_mb())


def _reference_bytes(job: QuantizeJob) -> int:
    """Bytes per element of the float block's view kept for GPTQ's asymmetric target (0: none): at
    most float32's (an RMSNorm's output entering gate/up is float32 whatever the compute dtype)."""
    if not (getattr(job.method, "asymmetric", False) and getattr(job.method, "true_sequential", False)):
        return 0
    return 4


def _calibration_tokens(job: QuantizeJob, model_dir: Path) -> torch.Tensor:
    cfg = job.calibration
    texts = load_texts(cfg.paths, cfg.encoding)
    if cfg.generic_paths:
        texts = mix_texts(texts, load_texts(cfg.generic_paths, cfg.encoding), cfg.generic_fraction, cfg.seed)
    return token_samples(load_text_tokenizer(model_dir), texts, cfg.samples, cfg.seq_len, cfg.seed)


def _block_tensors(block: nn.Module, quantized: dict[str, QuantizedLinear]) -> tuple[dict, dict]:
    tensors, meta = {}, {}
    for name, module in quantized.items():
        t, m = qlinear_to_tensors(module, name)
        tensors.update(t)
        meta[name] = m
    for name, value in block.state_dict().items():
        owner = name.rsplit(".", 1)[0]
        if owner not in quantized:
            tensors[name] = value.float()
    return tensors, meta


def run_quantize(job: QuantizeJob, progress: Callable[[int, int, str], None] | None = None,
                 stop_after: int | None = None) -> QuantizeReport:
    """Run (or resume) a job. `progress(done, total, message)` is called per block; `stop_after`
    ends the run after that many blocks (tests use it to simulate an interruption). The output
    directory is held for the run (`claim_output`): a second run into it fails at once. An 'auto'
    compute dtype is resolved here, once: what this host runs is what is recorded and compared."""
    job = dataclasses.replace(job, compute_dtype=resolve_compute_dtype(job.compute_dtype))
    with claim_output(job.out, job_arguments(job), job.overwrite):
        return _run(job, progress, stop_after)


def _run(job: QuantizeJob, progress, stop_after) -> QuantizeReport:
    start = time.perf_counter()
    reuse_freed_memory()
    baseline_rss = peak_rss_mb()
    model_dir = resolve_model_dir(job.model)
    # the source's hash for the manifest reads every weight byte (32 GB for an 8B model in fp32):
    # hashlib releases the GIL, so it runs beside the blocks instead of after them
    source_hash = _Background(weights_hash, model_dir)
    source = TensorSource(model_dir, job.allow_pickle)
    _check_memory(job, model_dir)
    tokens = _calibration_tokens(job, model_dir)
    calib = calibration_hash(tokens)
    fingerprint = _job_fingerprint(job, calib, model_dir)
    out = Path(job.out)
    work = out / WORK
    if (out / MANIFEST).exists():
        (out / MANIFEST).unlink()  # being rewritten: no longer complete
    state_file = work / "progress.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    if state and state.get("fingerprint") != fingerprint:
        raise OutputDirError(f"{out} holds an interrupted run of this command on other calibration tokens or "
                             "another quantwise version (the text changed?); pass --overwrite to start again")
    if not state:
        state = {"fingerprint": fingerprint, "arguments": job_arguments(job), "done": 0, "layers": {}, "errors": {}}

    memory = MemoryParts(interpreter_mb=_interpreter_mb(model_dir))
    skeleton = build_skeleton(model_dir, source)
    _check_plan(job, source, skeleton.layers_path + ".")
    memory.embeddings_mb = tensor_mb(skeleton.model)
    model_type = getattr(skeleton.config.get_text_config(), "model_type", skeleton.config.model_type)
    batches = list(tokens.split(job.batch_size))
    with torch.no_grad():
        for ids in batches:
            skeleton.inner(input_ids=ids, use_cache=False)
    total = len(skeleton.recorders)
    head_names = _head_names(skeleton.model)
    # The embeddings (and an untied lm_head) served the calibration inputs and are not needed again
    # until the end, when they are read back from the source: 4 GB of an 8B model's fp32 skeleton
    # no longer sits beside every block's solve.
    skeleton.model.to("meta")
    resumed_from = state["done"]
    if progress:
        progress(resumed_from, total, f"calibration inputs captured ({tokens.shape[0]} x {tokens.shape[1]} tokens)"
                 + (f", resuming at block {resumed_from}" if resumed_from else ""))
    inputs = _first_inputs(job, skeleton, work, resumed_from, len(batches))
    memory.activations_mb = 2 * (batch_mb(inputs) if job.offload_activations else
                                 sum(h.numel() * h.element_size() for h in inputs) / 2**20)
    heads = getattr(skeleton.config.get_text_config(), "num_attention_heads", 1)

    layers_prefix = skeleton.layers_path + "."
    # Outputs replayed between a block's passes: a quarter of what is free, none when the user
    # asked for the least memory.
    replay_budget = 0 if job.offload_activations else int(available_memory_mb() * 2**20 / 4)
    block_times = []
    # Each block's files (its packed weights, the next block's inputs, the progress that says both
    # are complete) are written by a thread while the next block computes: 2.4 s of a 54 s Gemma-3
    # run, 0.3 GB a block at 8B shapes. One block's writes in flight at most, in block order; an
    # interruption waits for them, so a resume starts after the last block whose files are whole.
    if not state_file.exists():
        # Before any block file, after every check of the input: a run killed while its first block's
        # files are written (in a thread) leaves a directory that says whose it is, so the same
        # command resumes it; a run refused for bad input leaves none.
        atomic_write_json(state, state_file)
    writer = _BlockWriter()
    try:
        for index in range(resumed_from, total):
            times = BlockTimes()
            tick = time.perf_counter()
            kwargs = skeleton.recorders[index].calls
            block = build_block(skeleton, index, source.with_prefix(f"{layers_prefix}{index}."))
            prefix = f"{layers_prefix}{index}."
            overrides = {name[len(prefix):]: fmt for name, fmt in job.format_overrides if name.startswith(prefix)}
            times.io += time.perf_counter() - tick
            trace = trace_block(block, *_one_sample(inputs[0], kwargs[0]), job.compute_dtype)
            groups = trace.groups
            cache = ReplayCache(block, trace, len(kwargs), replay_budget, job.compute_dtype)
            memory.widen(block_parts(block, tuple(inputs[0].shape), heads, groups, job.method.needs_hessian,
                                     tokens.numel(), _reference_bytes(job)))

            def group_done(names: list[str], index: int = index) -> None:
                if progress:
                    progress(index, total, f"block {index}: {'/'.join(n.rpartition('.')[2] for n in names)} done")

            quantized, errors = quantize_block(block, model_type, job.method, inputs, kwargs, overrides, times, groups,
                                               cache, group_done, trace.normalized, job.compute_dtype)
            tick = time.perf_counter()
            outputs = cache.outputs(inputs, kwargs)
            # offloaded, the forward and the writing interleave: one batch in memory
            inputs = spill(outputs, acts_dir(work, index + 1)) if job.offload_activations else list(outputs)
            times.forward += time.perf_counter() - tick
            memory.replay_mb = max(memory.replay_mb, cache.peak_bytes / 2**20)
            del cache
            tick = time.perf_counter()
            tensors, meta = _block_tensors(block, quantized)
            state["done"] = index + 1
            state["layers"][str(index)] = meta
            state["errors"][str(index)] = errors
            writer.submit(_save_block, None if job.offload_activations else inputs, tensors, copy.deepcopy(state),
                          state_file, layer_file(out, index), acts_dir(work, index))
            times.io += time.perf_counter() - tick
            block_times.append(times)
            del block
            trim_heap(keep_mb=HEAP_KEPT_BETWEEN_BLOCKS_MB)
            if progress:
                progress(index + 1, total, f"block {index}: max rel. error {max(errors.values()):.4f}")
            if stop_after is not None and index + 1 - resumed_from >= stop_after and index + 1 < total:
                raise KeyboardInterrupt(f"stopped after block {index}")
    finally:
        writer.close()
    rest = {name: source.get(name).float() for name in source.names() if not name.startswith(layers_prefix)}
    head_meta = None
    if job.quantize_lm_head:
        weight, bias = (next((rest[n] for n in names if n in rest), None) for names in head_names)
        head_tensors, head_meta = _quantize_lm_head(weight, bias, job.method)
        rest = {k: v for k, v in rest.items() if k != "lm_head.weight"} | head_tensors
    atomic_save_tensors(rest, rest_file(out))
    copy_model_files(model_dir, out)
    manifest = Manifest(
        model_type=model_type, layers_path=skeleton.layers_path, num_blocks=total,
        method={"name": job.method_name, "config": _jsonable(job.method)}, layers=state["layers"],
        source_model=str(job.model), source_hash=source_hash.result(),
        format_overrides=dict(job.format_overrides),
        high_precision=["embeddings", "norms"] + ([] if job.quantize_lm_head else ["lm_head"]),
        lm_head=head_meta,
        calibration={"hash": calib, "samples": job.calibration.samples, "seq_len": job.calibration.seq_len,
                     "seed": job.calibration.seed, "paths": list(job.calibration.paths)},
        relative_errors=state["errors"], files=content_hashes(out), arguments=job_arguments(job))
    write_manifest(manifest, out)
    shutil.rmtree(work, ignore_errors=True)
    report = QuantizeReport(str(out), str(job.model), job.method_name, total, time.perf_counter() - start,
                            peak_rss_mb(), baseline_rss, resumed_from,
                            calib, job.compute_dtype, block_times=block_times, memory=memory)
    for times in block_times:
        report.times.add(times)
    for block_index, errors in state["errors"].items():
        for name, err in errors.items():
            fmt = state["layers"][block_index][name]["weight"]["name"]
            report.layers.append(LayerReport(int(block_index), name, fmt, err))
    return report


class _Background:
    """fn(*args) in a daemon thread (an interrupted run does not wait for it); `result()` waits
    for it and raises what it raised."""

    def __init__(self, fn: Callable, *args) -> None:
        self._value, self._error = None, None
        self._thread = threading.Thread(target=self._call, args=(fn, args), daemon=True)
        self._thread.start()

    def _call(self, fn: Callable, args: tuple) -> None:
        try:
            self._value = fn(*args)
        except BaseException as exc:  # handed to the caller by result()
            self._error = exc

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


class _BlockWriter:
    """Writes one block's files at a time in a thread (`_Background`): `submit` first waits for the
    previous block's, and raises what failed there; `close` waits for the last."""

    def __init__(self) -> None:
        self._pending: _Background | None = None

    def submit(self, fn: Callable, *args) -> None:
        self.close()
        self._pending = _Background(fn, *args)

    def close(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()


def _save_block(inputs: list[torch.Tensor] | None, tensors: dict, state: dict, state_file: Path, layer_path: Path,
                consumed_inputs: Path) -> None:
    """A finished block's files; the progress file (`state_file`, in the work directory) last, so it
    never names a block whose files are not all written. `inputs`: the next block's, saved beside
    it (None when they are spilled to disk already)."""
    if inputs is not None:
        atomic_save_tensors({f"batch_{i}": h for i, h in enumerate(inputs)}, state_file.parent / "inputs.safetensors")
    atomic_save_tensors(tensors, layer_path)
    atomic_write_json(state, state_file)
    shutil.rmtree(consumed_inputs, ignore_errors=True)  # the block's spilled inputs, now consumed


def _first_inputs(job: QuantizeJob, skeleton, work: Path, resumed_from: int, count: int):
    """The first block's inputs: captured by the skeleton, or saved by the interrupted run."""
    if job.offload_activations:
        if resumed_from:
            return DiskActivations(acts_dir(work, resumed_from), count)
        captured, skeleton.recorders[0].inputs = skeleton.recorders[0].inputs, []
        return spill((captured.pop(0) for _ in range(count)), acts_dir(work, 0))
    if resumed_from:
        saved = load_file(str(work / "inputs.safetensors"))
        return [saved[f"batch_{i}"] for i in range(count)]
    inputs, skeleton.recorders[0].inputs = skeleton.recorders[0].inputs, []
    return inputs


def _interpreter_mb(model_dir: Path) -> float:
    """Resident memory with the model's transformers classes imported, before any weights."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    from .skeleton import load_config

    config = load_config(model_dir)
    with contextlib.suppress(KeyError):  # an unknown architecture fails loudly in build_skeleton
        MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]  # imports the modeling code
    return current_rss_mb()


def _head_names(model: nn.Module) -> tuple[list[str], list[str]]:
    """Every name of lm_head's weight and of its bias (a tied head's weight is also the embedding's)."""
    head = model.get_output_embeddings()
    names = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    bias_names = names.get(id(head.bias), []) if head.bias is not None else []
    return names.get(id(head.weight), []), bias_names


def _quantize_lm_head(weight: torch.Tensor, bias: torch.Tensor | None, method) -> tuple[dict[str, torch.Tensor], dict]:
    """lm_head as a weight-only RTN QuantizedLinear in the method's format (its own copy when tied)."""
    from ..methods import RTN

    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    linear.weight = nn.Parameter(weight, requires_grad=False)
    if bias is not None:
        linear.bias = nn.Parameter(bias, requires_grad=False)
    module = RTN(method.format).quantize_linear(linear, None)
    return qlinear_to_tensors(module, "lm_head")


def _jsonable(config) -> dict:
    return _jsonable_value(dataclasses.asdict(config))


def _jsonable_value(value):
    return json.loads(json.dumps(value, default=str))
