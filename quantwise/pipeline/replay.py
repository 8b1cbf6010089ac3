"""Passes through one block that do not recompute what an earlier pass already computed.

True-sequential quantization passes through a block once per input group, then once more for the
block's outputs. A submodule that finished before the observed group's first linear starts, and
whose linears (if any) are all quantized, returns the same values in every later pass: its inputs
come only from earlier, already quantized linears. Its outputs are recorded per batch the first
time it is final and replayed afterwards. With each pass also stopping right after the observed
group's inputs are seen, the passes together cost about one forward of the block plus one of its
attention, instead of one forward per group.

Replayed values are exactly the recorded ones, so results are bit-identical with and without the
cache (tested). Outputs are held without copying; a module whose recorded output the block then
modifies in place (its version counter moves) is dropped from the cache and recomputed, as is one
that would exceed the byte budget.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from .skeleton import run_block


@dataclass(frozen=True)
class Span:
    """Execution order of one submodule in a forward: its pre-hook and its end, on one counter."""

    start: int
    end: int


def trace_block(block: nn.Module, hidden: torch.Tensor, kwargs: dict
                ) -> tuple[list[list[str]], dict[str, Span]]:
    """One forward: the linears grouped by the input tensor object they receive (execution order)
    and each submodule's span. Submodules called more or less than once get no span."""
    linears = [name for name, m in block.named_modules() if isinstance(m, nn.Linear)]
    seen: list[tuple[torch.Tensor, list[str]]] = []
    starts: dict[str, list[int]] = {}
    ends: dict[str, list[int]] = {}
    clock = iter(range(1 << 62))

    def before(name, args):
        starts.setdefault(name, []).append(next(clock))
        if name in linears:
            for tensor, group in seen:
                if tensor is args[0]:
                    group.append(name)
                    return
            seen.append((args[0], [name]))

    def after(name):
        ends.setdefault(name, []).append(next(clock))

    hooks = []
    for name, module in block.named_modules():
        if name:
            hooks.append(module.register_forward_pre_hook(lambda _m, a, n=name: before(n, a)))
            hooks.append(module.register_forward_hook(lambda _m, _a, _o, n=name: after(n)))
    try:
        run_block(block, hidden, kwargs)
    finally:
        for hook in hooks:
            hook.remove()
    groups = [group for _, group in seen]
    missing = [n for n in linears if not any(n in g for g in groups)]
    spans = {n: Span(starts[n][0], ends[n][0]) for n in starts if len(starts[n]) == 1 and len(ends.get(n, ())) == 1}
    return groups + [[n] for n in missing], spans


def _nested(name: str, parent: str) -> bool:
    return name.startswith(parent + ".")


def _nbytes(value) -> int:
    return sum(t.numel() * t.element_size() for t in tree_flatten(value)[0] if isinstance(t, torch.Tensor))


def _versions(value) -> list[int]:
    """The version counters of a value's tensors: they move when anything modifies one in place."""
    return [t._version for t in tree_flatten(value)[0] if isinstance(t, torch.Tensor)]


@dataclass
class _Recorded:
    """One batch's output of a submodule, held without a copy, with the versions it was made at."""

    value: object
    versions: list[int]

    def intact(self) -> bool:
        return _versions(self.value) == self.versions


class ReplayCache:
    """Recorded outputs of one block's final submodules, per calibration batch."""

    def __init__(self, block: nn.Module, spans: dict[str, Span], batches: int, budget_bytes: int):
        self.block, self.spans, self.batches = block, spans, batches
        self.budget_bytes = budget_bytes
        self.recorded: dict[str, list] = {}
        self.batch = 0
        self.peak_bytes = 0

    @property
    def nbytes(self) -> int:
        return sum(_nbytes(o.value) for outs in self.recorded.values() for o in outs)

    def final_before(self, position: int) -> list[str]:
        """Outermost submodules that end before `position` and are not recorded yet (nor inside a
        recorded one)."""
        done = [n for n, s in self.spans.items() if s.end < position]
        outermost = [n for n in done if not any(_nested(n, other) for other in done)]
        return [n for n in outermost if n not in self.recorded
                and not any(_nested(n, other) for other in self.recorded)]

    @contextlib.contextmanager
    def active(self, record: Sequence[str] = ()) -> Iterator[None]:
        """Replay what is recorded, record `record`; modules are restored on exit. A recording
        left incomplete (a pass that did not reach it for every batch) is dropped."""
        if self.budget_bytes <= 0:
            yield
            return
        patched = []
        for name in self.recorded:
            patched.append(self._patch(name, self._replayer(name)))
        pending: dict[str, list] = {name: [] for name in record}
        for name in record:
            patched.append(self._patch(name, self._recorder(name, pending)))
        try:
            yield
        finally:
            for module in patched:
                del module.forward  # the class's forward again
        for name in [n for n, outs in self.recorded.items() if not all(o.intact() for o in outs)]:
            del self.recorded[name]
        for name, outputs in pending.items():
            if len(outputs) == self.batches and all(o.intact() for o in outputs):
                self.recorded[name] = outputs
                for inner in [n for n in self.recorded if _nested(n, name)]:
                    del self.recorded[inner]
        self.peak_bytes = max(self.peak_bytes, self.nbytes)

    def outputs(self, inputs: Sequence[torch.Tensor], kwargs: Sequence[dict]) -> Iterator[torch.Tensor]:
        """The block's outputs for every batch, replaying what is recorded."""
        with self.active():
            for index, (hidden, kw) in enumerate(zip(inputs, kwargs, strict=True)):
                self.batch = index
                yield run_block(self.block, hidden, kw)

    def _patch(self, name: str, forward) -> nn.Module:
        module = self.block.get_submodule(name)
        module.forward = forward  # an instance attribute shadows the class's forward
        return module

    def _replayer(self, name: str):
        outputs = self.recorded[name]

        def forward(*args, **kwargs):
            if not outputs[self.batch].intact():
                raise RuntimeError(f"replay cache: {name}'s recorded output was modified in place")
            return outputs[self.batch].value

        return forward

    def _recorder(self, name: str, pending: dict[str, list]):
        module = self.block.get_submodule(name)
        original = type(module).forward.__get__(module)

        def forward(*args, **kwargs):
            out = original(*args, **kwargs)
            if name in pending:
                planned = self.nbytes + sum(_nbytes(v[0].value) * self.batches for v in pending.values() if v)
                if not pending[name] and planned + _nbytes(out) * self.batches > self.budget_bytes:
                    del pending[name]  # over budget: recomputed in later passes instead
                else:
                    pending[name].append(_Recorded(out, _versions(out)))
            return out

        return forward
