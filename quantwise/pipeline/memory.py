"""What a block-by-block quantization run needs in memory, part by part, and the budget its peak
RSS is held to (1.5x the sum of the parts).

Parts (MiB):
  interpreter   the process with torch, transformers and the tokenizer loaded, before any weights
  embeddings    the skeleton: embeddings, final norm, lm_head when untied, rotary tables; held
                while the calibration inputs are captured and while the rest shard is written,
                not during the blocks (so the sum overstates the peak by this part)
  block         one block's float weights plus its quantized copy
  statistics    the largest input group's X^T X (float64 sum + float32 batch product) and the
                solve's working copies (weight, its update, per-column scales; H, its factor)
  activations   the calibration hidden states into and out of one block
  forward       one batch's transient tensors inside a block (attention scores, MLP intermediates)
  replay        submodule outputs kept between a block's passes (replay.py), as measured
  references    with GPTQ's asymmetric target: what the float block gives each input group after the
                first, over every calibration token (`block_quant.float_references`)
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

MIB = 2**20
BUDGET_FACTOR = 1.5


@dataclass
class MemoryParts:
    interpreter_mb: float = 0.0
    embeddings_mb: float = 0.0
    block_mb: float = 0.0
    statistics_mb: float = 0.0
    activations_mb: float = 0.0
    forward_mb: float = 0.0
    replay_mb: float = 0.0
    references_mb: float = 0.0

    @property
    def total_mb(self) -> float:
        return (self.interpreter_mb + self.embeddings_mb + self.block_mb + self.statistics_mb
                + self.activations_mb + self.forward_mb + self.replay_mb + self.references_mb)

    @property
    def budget_mb(self) -> float:
        return BUDGET_FACTOR * self.total_mb

    def widen(self, other: MemoryParts) -> None:
        """Keep the larger of each part (blocks differ: Gemma's sliding/global layers)."""
        for name in ("block_mb", "statistics_mb", "forward_mb", "references_mb"):
            setattr(self, name, max(getattr(self, name), getattr(other, name)))


def tensor_mb(module: nn.Module) -> float:
    """Bytes of a module's parameters and buffers, each storage counted once (tied weights)."""
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total / MIB


def block_parts(block: nn.Module, batch_shape: tuple[int, int, int], heads: int, groups: list[list[str]],
                need_hessian: bool = True, references_tokens: int = 0, reference_bytes: int = 4) -> MemoryParts:
    """block, statistics and forward parts of one float block; batch_shape (batch, seq, hidden);
    groups: the block's input groups (solved one at a time, the members of a group stacked).
    Statistics of a group with n inputs and r stacked rows: the float32 X^T X sum, the Hessian
    handed to the solve, its permuted working copy, the factorisation's buffers and the scaled
    factor (at most 40 n^2 bytes); the weights' solve copies, scales and results (20 r n bytes).
    Without a Hessian: the kept input samples only. `references_tokens`: calibration tokens the
    float block's view is kept for (the asymmetric target; 0 or `reference_bytes` 0 without it),
    `reference_bytes` per element (the compute dtype's), each group after the first by the narrower
    of its outputs and its input."""
    linears = [m for m in block.modules() if isinstance(m, nn.Linear)]
    weights = tensor_mb(block)
    quantized = weights / 4  # INT4-8 codes + scales: at most a quarter of fp32
    if need_hessian:
        statistics = max(_group_solve_bytes(block, group) for group in groups) / MIB
    else:
        statistics = len(linears) * 1024 * max(m.in_features for m in linears) * 4 / MIB
    batch, seq, hidden = batch_shape
    inter = max(m.out_features for m in linears)
    forward = batch * seq * (heads * seq * 2 + inter * 4 + hidden * 8) * 4 / MIB
    widths = [min(sum(block.get_submodule(n).out_features for n in group), block.get_submodule(group[0]).in_features)
              for group in groups[1:]]
    references = references_tokens * sum(widths) * reference_bytes / MIB
    return MemoryParts(block_mb=weights + quantized, statistics_mb=statistics, forward_mb=forward,
                       references_mb=references)


def _group_solve_bytes(block: nn.Module, group: list[str]) -> int:
    members = [block.get_submodule(name) for name in group]
    inputs, rows = members[0].in_features, sum(m.out_features for m in members)
    return 40 * inputs**2 + 20 * rows * inputs
