"""Memory and roofline latency of one deployment: a model, a precision, N GPUs of one type.

Decode step time = max(memory time, compute time) + tensor-parallel communication + overhead.
  memory time  = bytes read per step (weights + KV cache) / (N x bandwidth x efficiency)
  compute time = FLOPs per step / (N x peak of the path actually used x efficiency)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

from ..formats import storage_bytes
from ..hardware.catalog import GPU
from ..hardware.support import ComputePath, compute_path
from ..models import ModelArch, ParamBreakdown, linear_shapes, param_breakdown
from .assumptions import PlannerAssumptions
from .precisions import KV_DTYPE_BYTES, PlanPrecision

HIGH_PRECISION_BYTES = 2  # embeddings, lm_head, norms stay FP16/BF16 unless asked otherwise


@dataclass(frozen=True)
class StepTime:
    memory_s: float
    compute_s: float
    comm_s: float
    overhead_s: float

    @property
    def total_s(self) -> float:
        return max(self.memory_s, self.compute_s) + self.comm_s + self.overhead_s

    @property
    def bound(self) -> str:
        return "memory" if self.memory_s >= self.compute_s else "compute"


@dataclass(frozen=True)
class Deployment:
    arch: ModelArch
    gpu: GPU
    precision: PlanPrecision
    tp: int = 1
    context: int = 4096
    kv_dtype: str = "fp16"
    quantize_lm_head: bool = False
    assumptions: PlannerAssumptions = PlannerAssumptions()
    slow_kernel: bool = False   # the engine runs this precision without a fast kernel (NF4-class speed)
    fp16_accumulate: bool = False  # the engine's FP16 GEMMs accumulate in FP16 (GeForce: twice the rate)

    def __post_init__(self) -> None:
        if self.tp < 1:
            raise ValueError(f"tensor-parallel degree must be >= 1, got {self.tp}")
        if self.context < 1:
            raise ValueError(f"context must be >= 1 token, got {self.context}")
        if self.kv_dtype not in KV_DTYPE_BYTES:
            raise ValueError(f"unknown KV dtype {self.kv_dtype!r}; known: {', '.join(KV_DTYPE_BYTES)}")

    # ---- memory -------------------------------------------------------------------------------
    @cached_property
    def params(self) -> ParamBreakdown:
        return _params(self.arch)

    @cached_property
    def linear_params_active(self) -> float:
        """Parameters of the decoder-block linears one token passes through."""
        p = self.params
        return p.active - p.embeddings - p.positions - p.lm_head - p.norms_biases - p.router

    @cached_property
    def _linear_bytes(self) -> tuple[float, float]:
        """(dense linear bytes, expert linear bytes) in the precision's real storage."""
        return _linear_bytes(self.arch, self.precision)

    def _matrix_bytes(self, rows: int, cols: int) -> float:
        return _matrix_bytes(self.precision, rows, cols)

    @cached_property
    def lm_head_bytes(self) -> float:
        a = self.arch
        if self.quantize_lm_head:
            return self._matrix_bytes(a.vocab, a.hidden)
        return float(a.vocab * a.hidden * HIGH_PRECISION_BYTES)

    @cached_property
    def weight_bytes(self) -> float:
        """All weights as stored: quantized linears + high-precision embeddings, norms, biases."""
        params = self.params
        high = (params.embeddings + params.positions + params.norms_biases + params.router) * HIGH_PRECISION_BYTES
        lm_head = self.lm_head_bytes if (not self.arch.tied or self.quantize_lm_head) else 0.0
        return sum(self._linear_bytes) + high + lm_head

    @cached_property
    def kv_bytes_per_token(self) -> float:
        return self.arch.kv_values_per_token * KV_DTYPE_BYTES[self.kv_dtype]

    @property
    def workspace_bytes(self) -> float:
        """Activation workspace of one prefill chunk (hidden, attention and MLP intermediates, fp16)."""
        a = self.arch
        width = 4 * a.hidden + 2 * a.intermediate * a.experts_per_token
        return self.assumptions.prefill_chunk_tokens * width * HIGH_PRECISION_BYTES

    @property
    def usable_bytes(self) -> float:
        per_gpu = self.gpu.memory_bytes * self.assumptions.gpu_memory_utilization \
            - self.assumptions.runtime_overhead_gb * 1e9
        return self.tp * per_gpu

    @property
    def kv_capacity_bytes(self) -> float:
        return self.usable_bytes - self.weight_bytes - self.workspace_bytes

    @property
    def max_batch(self) -> int:
        """Sequences of `context` tokens whose KV cache fits next to the weights (0: does not fit)."""
        capacity = self.kv_capacity_bytes
        return max(0, int(capacity // (self.kv_bytes_per_token * self.context))) if capacity > 0 else 0

    def memory_total_bytes(self, batch: int) -> float:
        return self.weight_bytes + self.workspace_bytes + batch * self.context * self.kv_bytes_per_token

    # ---- time ---------------------------------------------------------------------------------
    def weight_bytes_read(self, batch: float) -> float:
        """Weights streamed per decode step; MoE reads only the experts the batch routes to."""
        dense, experts = self._linear_bytes
        if experts:
            e, k = self.arch.experts, self.arch.experts_per_token
            experts *= 1.0 - (1.0 - k / e) ** batch  # expected share of experts touched
        return dense + experts + self._lm_head_and_norms

    @cached_property
    def _lm_head_and_norms(self) -> float:
        return self.lm_head_bytes + self.params.norms_biases * HIGH_PRECISION_BYTES

    @cached_property
    def matmul_path(self) -> ComputePath:
        return compute_path(self.gpu, self.precision.matmul)

    def _bandwidth_efficiency(self) -> float:
        a = self.assumptions
        if self.precision.is_nf4 or self.slow_kernel:
            return a.nf4_bandwidth_efficiency
        if self.precision.weight_only or self.matmul_path is ComputePath.DEQUANTIZE:
            return a.weight_only_bandwidth_efficiency
        return a.bandwidth_efficiency

    @property
    def fp16_peak_tflops(self) -> float:
        """The GPU's FP16 tensor rate for this engine: GeForce cards double it with FP16 accumulation."""
        gpu = self.gpu
        return gpu.fp16_acc_tflops if self.fp16_accumulate and gpu.fp16_acc_tflops else gpu.fp16_tflops

    def linear_flops_per_s(self) -> float:
        """Effective throughput of the decoder linears on the path actually used."""
        a, gpu = self.assumptions, self.gpu
        if self.slow_kernel:
            return self.tp * self.fp16_peak_tflops * 1e12 * a.nf4_compute_efficiency
        if self.matmul_path is ComputePath.NATIVE and not self.precision.weight_only:
            rate = {"fp16": self.fp16_peak_tflops, "fp8": gpu.fp8_tflops, "int8": gpu.int8_tops,
                    "fp4": gpu.fp4_tflops}[self.precision.matmul]
            return self.tp * rate * 1e12 * a.compute_efficiency
        if self.precision.is_float_cast:
            return self.tp * self.fp16_peak_tflops * 1e12 * a.compute_efficiency
        factor = a.nf4_compute_efficiency if self.precision.is_nf4 else a.dequant_compute_efficiency
        return self.tp * self.fp16_peak_tflops * 1e12 * factor

    def step_time(self, batch: int, context: int | None = None) -> StepTime:
        """One decode step for `batch` sequences each holding `context` tokens of KV cache."""
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        return self.mixed_step(batch, self.context if context is None else context, 0.0, 0.0)

    @cached_property
    def _step_coefficients(self) -> tuple[float, ...]:
        """Per-deployment constants of mixed_step, gathered once (a grid calls it ~10^5 times):
        (seconds per streamed byte, per KV token read, per linear token, per lm_head token,
        per attention query-key pair, comm fixed, comm per token, overhead, overhead per sequence)."""
        a, arch, gpu = self.assumptions, self.arch, self.gpu
        bytes_per_s = self.tp * gpu.bandwidth_bytes_per_s * self._bandwidth_efficiency()
        fp16_rate = self.tp * self.fp16_peak_tflops * 1e12 * a.compute_efficiency
        comm_fixed = self._comm_s(0.0) if self.tp > 1 else 0.0
        comm_token = self._comm_s(1.0) - comm_fixed if self.tp > 1 else 0.0
        kv_bytes_per_s = self.tp * gpu.bandwidth_bytes_per_s * a.kv_bandwidth_efficiency
        return (1.0 / bytes_per_s, self.kv_bytes_per_token / kv_bytes_per_s,
                2.0 * self.linear_params_active / self.linear_flops_per_s(), 2.0 * arch.vocab * arch.hidden / fp16_rate,
                4.0 * arch.layers * arch.heads * arch.head_dim / fp16_rate, comm_fixed, comm_token,
                a.step_overhead_s + arch.layers * a.layer_overhead_s, a.sequence_overhead_s)

    def mixed_step(self, decode: float, decode_context: float, prefill: float, prefill_context: float,
                   logits: float | None = None) -> StepTime:
        """One engine step: `decode` sequences each emit a token attending to `decode_context`
        cached tokens, and `prefill` prompt tokens (chunked prefill) attend on average to
        `prefill_context` earlier tokens. Counts may be fractional (steady-state averages).
        logits: tokens that go through lm_head (default: the decode tokens, or 1 for a pure prefill).

        memory  = (weights read + KV read) / bandwidth;  KV read = decode x context (+ the prompt so far)
        compute = 2 x linear params x tokens / linear rate + (lm_head + 4 x layers x heads x head_dim x
                  query-key pairs) / FP16 rate"""
        (per_byte, per_kv, per_linear, per_logit, per_key, comm_fixed, comm_token, overhead,
         per_sequence) = self._step_coefficients
        tokens = decode + prefill
        logits = (decode if decode > 0 else 1.0) if logits is None else logits
        weights = self._dense_read if self._expert_bytes == 0.0 else self.weight_bytes_read(max(tokens, 1.0))
        memory_s = weights * per_byte + (decode * decode_context + (prefill_context if prefill else 0.0)) * per_kv
        keys = decode * decode_context + prefill * prefill_context  # query-key pairs per layer and head
        compute_s = tokens * per_linear + logits * per_logit + keys * per_key
        return StepTime(memory_s, compute_s, comm_fixed + comm_token * tokens, overhead + per_sequence * decode)

    @cached_property
    def _expert_bytes(self) -> float:
        return self._linear_bytes[1]

    @cached_property
    def _dense_read(self) -> float:
        return self.weight_bytes_read(1.0)

    def _comm_s(self, tokens: float) -> float:
        """Two all-reduces of the hidden state per layer under tensor parallelism (ring): each
        moves 2(tp-1)/tp of the message over the link at interconnect_efficiency of its rate."""
        if self.tp == 1:
            return 0.0
        a = self.assumptions
        message = tokens * self.arch.hidden * HIGH_PRECISION_BYTES
        pcie = self.gpu.interconnect.lower().startswith("pcie")
        latency = a.pcie_allreduce_latency_s if pcie else a.allreduce_latency_s
        link = self.gpu.interconnect_gbps * 1e9 * a.interconnect_efficiency
        per_call = latency + 2 * (self.tp - 1) / self.tp * message / link
        return 2 * self.arch.layers * per_call

    def prefill_time_s(self, prompt_tokens: int) -> float:
        """Time to first token for one prompt alone (unloaded): the whole prompt in one pass,
        compute-bound unless the prompt is tiny; causal attention averages prompt/2 keys a token."""
        return self.mixed_step(0.0, 0.0, float(prompt_tokens), prompt_tokens / 2.0, logits=1.0).total_s

    def ridge_batch(self, limit: int = 1 << 16) -> int | None:
        """Smallest batch at which decode turns compute-bound (None if not below `limit`)."""
        if self.step_time(limit).bound == "memory":
            return None
        low, high = 1, limit
        while low < high:
            mid = (low + high) // 2
            if self.step_time(mid).bound == "compute":
                high = mid
            else:
                low = mid + 1
        return low


@lru_cache(maxsize=256)
def _params(arch: ModelArch) -> ParamBreakdown:
    return param_breakdown(arch)


def _matrix_bytes(precision: PlanPrecision, rows: int, cols: int) -> float:
    """Stored bytes of one (rows, cols) weight matrix in this precision."""
    if precision.storage_bits is not None:
        return rows * cols * precision.storage_bits / 8
    return float(storage_bytes(precision.weight_spec, rows, cols))


@lru_cache(maxsize=1024)
def _linear_bytes(arch: ModelArch, precision: PlanPrecision) -> tuple[float, float]:
    """(dense, expert) bytes of the decoder linears; memoized: a grid builds thousands of
    deployments of the same model and precision, and the sizes depend on nothing else."""
    dense = experts = 0.0
    for shape in linear_shapes(arch):
        size = _matrix_bytes(precision, shape.out_features, shape.in_features) * shape.count
        if shape.expert:
            experts += size
        else:
            dense += size
    return dense, experts


def ridge_intensity(gpu: GPU, peak_tflops: float) -> float:
    """Arithmetic intensity (FLOP per byte) where a kernel turns compute-bound: peak / bandwidth."""
    return peak_tflops * 1e12 / gpu.bandwidth_bytes_per_s
