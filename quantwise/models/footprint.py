"""What a command will need in memory, estimated from the model's shapes before any work, so a
run that cannot fit is refused in one line instead of swapping the machine or being killed
half-way. Estimates err on the high side of what the parts need; the interpreter with torch and
transformers loaded is counted as a constant."""

from __future__ import annotations

from .arch import ModelArch, linear_shapes, param_breakdown

MIB = 2**20
INTERPRETER_MB = 450.0      # python + torch + transformers + a tokenizer, measured at ~400 MiB


def eval_footprint_mb(arch: ModelArch, models: int, window: int) -> float:
    """`eval`: every model resident in float32 at once (candidates dequantized for scoring),
    plus each model's logits and log-softmax copies for one window."""
    params = param_breakdown(arch).total
    logits = window * arch.vocab * 4 * 3
    return INTERPRETER_MB + models * (params * 4 + logits) / MIB


def quantize_footprint_mb(arch: ModelArch, samples: int, seq_len: int, batch_size: int, offload: bool,
                          needs_hessian: bool = True, reference_bytes: int = 0) -> float:
    """`quantize`: embeddings (and an untied lm_head), one float block and its quantized copy,
    the widest Hessian (float64 sum, float32 copy and Cholesky factor: 16 bytes per entry) when
    the method solves with one, the calibration hidden states in and out of a block (one batch of
    them with --offload-activations), and with GPTQ's asymmetric target the float block's view of
    three hidden-wide groups per token (`reference_bytes` per element; 0 without it)."""
    breakdown = param_breakdown(arch)
    outer = breakdown.embeddings + breakdown.lm_head + breakdown.positions
    block = (breakdown.total - outer) / max(arch.layers, 1)
    widest = max(shape.in_features for shape in linear_shapes(arch))
    rows = batch_size if offload else samples
    activations = 2 * rows * seq_len * arch.hidden * 4
    forward = batch_size * seq_len * (arch.heads * seq_len + 3 * arch.intermediate) * 4
    hessian = widest * widest * 16 if needs_hessian else 0
    references = samples * seq_len * 3 * arch.hidden * reference_bytes
    return INTERPRETER_MB + (outer * 4 + block * 4 * 1.25 + hessian + activations + forward + references) / MIB


def require_memory(needed_mb: float, what: str, hint: str, available_mb: float | None) -> None:
    """Refuse `what` when its estimate exceeds the memory available now."""
    from ..errors import QuantwiseError

    if available_mb is not None and needed_mb > available_mb:
        raise QuantwiseError(f"{what} needs about {needed_mb:,.0f} MiB but only {available_mb:,.0f} MiB are "
                             f"available; {hint}")


def arch_of(model_dir) -> ModelArch | None:
    """The architecture facts of a model directory, or None for one the estimates do not cover."""
    from .arch import arch_from_config
    from .source import read_config

    try:
        return arch_from_config(read_config(model_dir))
    except (ValueError, OSError, TypeError):
        return None
