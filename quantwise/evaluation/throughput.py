"""Decode and prefill speed on this machine with real packed kernels, next to the roofline.

Every row reports the weight bytes one decode step streams, that as GB/s and as a fraction of
this machine's measured memory bandwidth, both for the whole step and for the linear layers
alone (so per-step overhead is visible), and the roofline's prediction for this machine.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from ..formats import QuantSpec, parse_spec, quantize
from ..runtime.kernels import FUSED_LABEL, use_packed_kernels
from ..runtime.qlinear import PER_TOKEN_INT8, QuantizedLinear
from ..sysinfo import CpuSnapshot, cpu_snapshot, other_cores
from .bench_checks import (
    STABLE_IQR_PCT,
    accounting_violations,
    host_busy,
    measure_checked,
    pooled_until_stable,
    ratio_warning,
    summarize,
)

# bench name -> weight format (RTN on the fly). Everything but fp32 runs with bf16 activations,
# the A16 of W4A16 / W8A16 and the dtype the packed CPU kernels are fast with.
ON_THE_FLY = {"fp32": None, "bf16": None, "int8": "int8-channel", "int4": "int4-g128", "int4-asym": "int4-g128-asym",
              "nf4": "nf4-g64", "fp8": "fp8_e4m3-channel", "w8a8": "int8-channel"}
# on-the-fly formats whose activations are quantized too (per-token dynamic INT8, as SmoothQuant runs)
PER_TOKEN_ACTIVATIONS = {"w8a8"}
UNFUSED = ":unfused"  # format suffix: sibling projections as separate kernel calls, for comparison


@dataclass(frozen=True)
class MachineProbe:
    read_gb_per_s: float      # streaming read bandwidth (sum of a 256 MiB fp32 tensor)
    matmul_gflops: float      # dense matmul throughput: fp32 on CPU, bf16 on a GPU
    threads: int
    other_cores: float = 0.0  # cores other processes kept busy while probing


@dataclass
class BenchRow:
    model: str
    format: str
    kernel: str
    batch: int
    prefill_tokens_per_s: float
    decode_ms: float
    decode_tokens_per_s: float
    iqr_pct: float             # interquartile range of the decode-step samples, % of their median
    weight_mb_per_step: float  # MiB of weights read per decode step
    step_gb_per_s: float
    step_bw_fraction: float
    linear_ms: float
    linear_gb_per_s: float
    linear_bw_fraction: float
    predicted_ms: float
    read_gb_per_s: float = 0.0  # the bandwidth this row's fractions are taken of
    speedup_vs_fp32: float | None = None
    note: str = ""
    decode_q1_ms: float | None = None  # quartiles of the decode-step samples (None: decode_ms)
    decode_q3_ms: float | None = None
    linear_iqr_pct: float = 0.0
    rounds: int = 1                    # decode rounds pooled to bound the spread
    attempts: int = 1                  # measurements of the whole row (re-measured when it contradicts itself)
    load_before: float = 0.0           # 1-minute load average as the row started and ended
    load_after: float = 0.0
    other_cores: float = 0.0           # cores other processes kept busy while the row ran
    flags: list[str] = field(default_factory=list)      # short: part>whole, >100%BW, busy, noisy
    warnings: list[str] = field(default_factory=list)   # the same in words, printed under the table
    decode_samples_ms: list[float] = field(default_factory=list)

    @property
    def speedup_label(self) -> str:
        """The same-run ratio as printed: '?' marks one its spread makes untrustworthy."""
        if self.speedup_vs_fp32 is None:
            return "-"
        return f"{self.speedup_vs_fp32:.2f}x" + ("?" if "ratio?" in self.flags else "")

    def __post_init__(self) -> None:
        self.decode_q1_ms = self.decode_ms if self.decode_q1_ms is None else self.decode_q1_ms
        self.decode_q3_ms = self.decode_ms if self.decode_q3_ms is None else self.decode_q3_ms


def synchronizer(device: str | torch.device = "cpu"):
    """What to call before reading the clock: CUDA runs asynchronously, the CPU does not."""
    if torch.device(device).type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def median_time(fn, repeats: int, warmup: int = 2, sync=lambda: None) -> tuple[float, list[float]]:
    """Median seconds of `repeats` calls after `warmup` untimed ones, and every sample."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def read_bandwidth(megabytes: int = 256, device: str | torch.device = "cpu", repeats: int = 9) -> float:
    """Streaming read GB/s: the median of `repeats` sums of a tensor larger than the caches."""
    data = torch.ones(megabytes * 2**20 // 4, device=device)
    read_s, _ = median_time(lambda: data.sum(), repeats, sync=synchronizer(device))
    return data.numel() * 4 / read_s / 1e9


def probe_machine(megabytes: int = 256, device: str | torch.device = "cpu") -> MachineProbe:
    """Streaming read bandwidth and dense matmul rate of the device (fp32 on CPU, bf16 on a GPU)."""
    sync = synchronizer(device)
    before = cpu_snapshot()
    gpu = torch.device(device).type == "cuda"
    size, dtype = (4096, torch.bfloat16) if gpu else (1024, torch.float32)
    a, b = torch.randn(size, size, device=device, dtype=dtype), torch.randn(size, size, device=device, dtype=dtype)
    mm_s, _ = median_time(lambda: a @ b, 5, sync=sync)
    bandwidth = read_bandwidth(megabytes, device)
    return MachineProbe(bandwidth, 2 * size**3 / mm_s / 1e9, torch.get_num_threads(),
                        other_cores(before, cpu_snapshot()))


def quantize_linears(model: nn.Module, fmt: str | None, include_lm_head: bool = True,
                     act_spec: QuantSpec | None = None) -> None:
    """RTN-quantize every nn.Linear (lm_head too, by default) in place; fmt None leaves fp32."""
    if fmt is None:
        return
    spec = parse_spec(fmt)
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and (include_lm_head or not name.endswith("lm_head")):
            parent, _, child = name.rpartition(".")
            replacement = QuantizedLinear(quantize(module.weight.detach().float(), spec), module.bias,
                                          act_spec=act_spec)
            setattr(model.get_submodule(parent) if parent else model, child, replacement)


def quantize_on_the_fly(model: nn.Module, name: str) -> None:
    """Apply one of ON_THE_FLY's formats (RTN, every linear including lm_head) in place."""
    act_spec = PER_TOKEN_INT8 if name in PER_TOKEN_ACTIVATIONS else None
    quantize_linears(model, ON_THE_FLY[name], act_spec=act_spec)


def linear_modules(model: nn.Module, activations: torch.dtype = torch.float32) -> list[tuple[str, nn.Module, int, int]]:
    """(name, module, in_features, weight bytes read per call) of every linear-like module a step runs.
    A QuantizedLinear that no kernel takes reads its dequantized copy in the activation dtype."""
    out = []
    for name, module in model.named_modules():
        if hasattr(module, "weight_bytes"):  # packed kernels
            out.append((name, module, module.in_features, module.weight_bytes))
        elif isinstance(module, QuantizedLinear):
            dense = module.out_features * module.in_features * activations.itemsize
            out.append((name, module, module.in_features, dense))
        elif isinstance(module, nn.Linear):
            out.append((name, module, module.in_features, module.weight.numel() * module.weight.element_size()))
    return out


def _decode_step_time(model: nn.Module, batch: int, prompt: int, steps: int, vocab: int,
                      device: str | torch.device = "cpu") -> list[float]:
    """Seconds of each of `steps` decode steps after a `prompt`-token forward (2 warm-up steps dropped)."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (batch, prompt), generator=gen).to(device)
    sync = synchronizer(device)
    with torch.no_grad():
        out = model(ids, use_cache=True)
        cache, token = _cache_of(out), out.logits[:, -1:].argmax(-1)
        times = []
        for step in range(steps + 2):
            sync()
            start = time.perf_counter()
            out = model(token, **{_CACHE_ARG: cache}, use_cache=True)
            sync()
            elapsed = time.perf_counter() - start
            cache, token = _cache_of(out), out.logits[:, -1:].argmax(-1)
            if step >= 2:  # warm-up steps excluded
                times.append(elapsed)
    return times


def _cache_of(output):
    """The KV cache of a forward's output (transformers 5 names it `cache`, 4 `past_key_values`)."""
    return output["cache"] if "cache" in output else output["past_key_values"]


_CACHE_ARG = "cache" if int(__import__("transformers").__version__.split(".")[0]) >= 5 else "past_key_values"


@dataclass(frozen=True)
class BenchSettings:
    """How a row is measured. rounds: decode runs pooled at most, stopping once the IQR is within
    STABLE_IQR_PCT; attempts: measurements of a row that contradicts itself (part > whole)."""

    steps: int = 16
    prompt: int = 32
    prefill_tokens: int = 128
    rounds: int = 3
    attempts: int = 3


@dataclass(frozen=True)
class _StepAccounting:
    """What one decode step of a packed model runs and reads."""

    kernel_label: str
    linears: list
    weight_bytes: int
    flops_per_token: int
    vocab: int


@dataclass(frozen=True)
class _Measurement:
    decode_s: list[float]
    linear_s: list[float]
    prefill_s: float
    bandwidth_gb_per_s: float
    rounds: int
    before: CpuSnapshot
    after: CpuSnapshot


def _step_accounting(model: nn.Module, kernels: dict, activations: torch.dtype) -> _StepAccounting:
    act = str(activations).replace("torch.", "")
    linears = linear_modules(model, activations)
    names = sorted({label.removesuffix(FUSED_LABEL) for label in kernels.values()}) or ["torch.nn.Linear"]
    fused = " with q/k/v and gate/up fused" if any(label.endswith(FUSED_LABEL) for label in kernels.values()) else ""
    flops_per_token = 2 * sum(size_in * (m.out_features if hasattr(m, "out_features") else 0)
                              for _, m, size_in, _ in linears)
    vocab = model.config.get_text_config().vocab_size if hasattr(model.config, "get_text_config") \
        else model.config.vocab_size
    return _StepAccounting(f"{', '.join(names)} ({act} act., {len(linears)} linear calls/step{fused})", linears,
                           sum(size for *_, size in linears), flops_per_token, vocab)


def _measure(model: nn.Module, step: _StepAccounting, batch: int, settings: BenchSettings,
             activations: torch.dtype, device) -> _Measurement:
    """One measurement of a row: decode steps and linear passes pooled over rounds until their
    spread is bounded, prefill, and the bandwidth right next to them, with host load around it."""
    sync = synchronizer(device)
    before = cpu_snapshot()
    decode, rounds = pooled_until_stable(
        lambda: _decode_step_time(model, batch, settings.prompt, settings.steps, step.vocab, device),
        settings.rounds)
    with torch.no_grad():
        inputs = {n: torch.randn(batch, 1, width, dtype=activations, device=device) for n, _, width, _ in step.linears}
        linear, _ = pooled_until_stable(
            lambda: median_time(lambda: [m(inputs[n]) for n, m, _, _ in step.linears],
                                max(3, settings.steps // 2), sync=sync)[1], settings.rounds)
        ids = torch.randint(0, step.vocab, (batch, settings.prefill_tokens)).to(device)
        prefill_s, _ = median_time(lambda: model(ids, use_cache=False), 2, warmup=1, sync=sync)
    # shared machines' bandwidth drifts by tens of percent within minutes: each row is compared
    # with the bandwidth measured right next to it
    bandwidth = read_bandwidth(device=device)
    return _Measurement(decode, linear, prefill_s, bandwidth, rounds, before, cpu_snapshot())


def _row(m: _Measurement, step: _StepAccounting, name: str, fmt_label: str, batch: int,
         settings: BenchSettings, probe: MachineProbe) -> BenchRow:
    decode, linear = summarize(m.decode_s), summarize(m.linear_s)
    bandwidth = m.bandwidth_gb_per_s
    predicted = max(step.weight_bytes / (bandwidth * 1e9),
                    step.flops_per_token * batch / (probe.matmul_gflops * 1e9))
    step_rate, linear_rate = step.weight_bytes / decode.median / 1e9, step.weight_bytes / linear.median / 1e9
    return BenchRow(
        model=name, format=fmt_label, kernel=step.kernel_label, batch=batch,
        prefill_tokens_per_s=batch * settings.prefill_tokens / m.prefill_s, decode_ms=decode.median * 1e3,
        decode_tokens_per_s=batch / decode.median, iqr_pct=decode.iqr_pct,
        weight_mb_per_step=step.weight_bytes / 2**20,
        step_gb_per_s=step_rate, step_bw_fraction=step_rate / bandwidth,
        linear_ms=linear.median * 1e3, linear_gb_per_s=linear_rate, linear_bw_fraction=linear_rate / bandwidth,
        read_gb_per_s=bandwidth, predicted_ms=predicted * 1e3,
        decode_q1_ms=decode.q1 * 1e3, decode_q3_ms=decode.q3 * 1e3, linear_iqr_pct=linear.iqr_pct,
        rounds=m.rounds, load_before=m.before.load_1min, load_after=m.after.load_1min,
        other_cores=other_cores(m.before, m.after), decode_samples_ms=[t * 1e3 for t in m.decode_s])


def bench_model(model: nn.Module, name: str, fmt_label: str, batches: list[int], probe: MachineProbe,
                settings: BenchSettings = BenchSettings(), activations: torch.dtype = torch.float32,
                fuse: bool = True, device: str | torch.device = "cpu", progress=None) -> list[BenchRow]:
    """One row per batch size; `progress(message)` is called as each batch starts. A row that
    contradicts itself (linear layers slower than the whole step, over 100% of the measured
    bandwidth) is measured again, up to settings.attempts times, then kept with its flags."""
    model.eval()
    kernels = use_packed_kernels(model, fuse=fuse, device=device)
    model.to(device=device, dtype=activations)  # after packing: packed weights keep their integer storage
    step = _step_accounting(model, kernels, activations)
    rows = []
    for batch in batches:
        if progress:
            progress(f"{fmt_label} batch {batch}")
        row, problems, attempts = measure_checked(
            lambda batch=batch: _row(_measure(model, step, batch, settings, activations, device), step, name,
                                     fmt_label, batch, settings, probe),
            accounting_violations, settings.attempts)
        row.attempts = attempts
        _flag(row, problems, os.cpu_count() or 1)  # /proc/stat's busy time covers every CPU, not our threads
        rows.append(row)
    return rows


def _flag(row: BenchRow, problems: list[str], cores: int) -> None:
    """Short flags for the table and sentences for under it: what makes this row doubtful."""
    if problems:
        row.flags += [">100%BW" if "bandwidth" in p else "part>whole" for p in problems]
        tries = f"after {row.attempts} measurements" if row.attempts > 1 else "in its only measurement"
        row.warnings += [f"{p} {tries}: the timings were disturbed (or the weights sat in a cache)"
                         for p in problems]
    if host_busy(row.other_cores, cores):
        row.flags.append("busy")
        row.warnings.append(f"host busy: other processes kept {row.other_cores:.1f} of {cores} cores busy during "
                            f"this row (load average {row.load_before:.1f} before, {row.load_after:.1f} after), "
                            "so its times are inflated and noisy")
    if row.iqr_pct > STABLE_IQR_PCT:
        row.flags.append("noisy")
        row.warnings.append(f"decode steps spread {row.iqr_pct:.0f}% (IQR) even after {row.rounds} "
                            f"round{'s' if row.rounds > 1 else ''} of {len(row.decode_samples_ms) // row.rounds} steps")


def annotate(rows: list[BenchRow]) -> None:
    """Speed-up against fp32 at the same batch (a same-run ratio), a warning where the spread of
    either row makes it untrustworthy, and plain words where a format is slower than fp32."""
    base = {r.batch: r for r in rows if r.format == "fp32"}
    for row in rows:
        ref = base.get(row.batch)
        if ref is None or row is ref:
            continue
        row.speedup_vs_fp32 = ref.decode_ms / row.decode_ms
        doubt = ratio_warning(row, ref)
        if doubt:
            row.flags.append("ratio?")
            row.warnings.append(doubt)
        if row.speedup_vs_fp32 < 1.0:
            row.note = (f"{row.format.upper()} is kernel-bound here, slower than FP32 "
                        f"({row.linear_gb_per_s:.1f} GB/s of weights vs FP32's {ref.linear_gb_per_s:.1f})")
        elif row.linear_bw_fraction < 0.3:
            row.note = "far below the memory roofline: the kernel, not bandwidth, limits it"
