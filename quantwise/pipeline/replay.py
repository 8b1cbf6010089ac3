"""Passes through one block that do not recompute what an earlier pass already computed.

True-sequential quantization passes through a block once per input group, then once more for the
block's outputs. A submodule that finished before the observed group's first linear starts, and
whose linears (if any) are all quantized, returns the same values in every later pass: its inputs
come only from earlier, already quantized linears. Its outputs are recorded per batch the first
time it is final and replayed afterwards. With each pass also stopping right after the observed
group's inputs are seen, the passes together cost about one forward of the block plus one of its
attention, instead of one forward per group.

That second attention goes too: a submodule whose output is its last linear's output, returned as
is (attention ending in o_proj, an MLP ending in down_proj), is cut short in the pass that observes
that linear: the linear returns zeros in place of its output, the rest of the submodule's output
and the linear's input are recorded (a "tail"), and later passes rebuild the output by running only
the now quantized linear on the recorded input. Nothing inside the tail's owner is recorded then.
(Tested: a Llama block computes attention four times per batch without the cache, once with it.)

Replayed values are exactly the recorded ones, so results are bit-identical with and without the
cache (tested). Outputs are held without copying; a module whose recorded output the block then
modifies in place (its version counter moves) is dropped from the cache and recomputed, as is one
that would exceed the byte budget.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_unflatten

from .skeleton import run_block


class StopPass(Exception):
    """Raised by a hook to end a pass once what it needs has run."""


@dataclass(frozen=True)
class Span:
    """Execution order of one submodule in a forward: its pre-hook and its end, on one counter."""

    start: int
    end: int


@dataclass(frozen=True)
class BlockTrace:
    """What one forward of a block shows: the linears grouped by the input tensor object they
    receive (execution order), each submodule's span (submodules called more or less than once get
    none), the tails: submodule -> the linear that ends last inside it, when the submodule
    returns that linear's output object unchanged, and the linears whose output object an RMSNorm
    module receives (Gemma's post-attention and post-feedforward norms), with the norm's epsilon."""

    groups: list[list[str]]
    spans: dict[str, Span]
    tails: dict[str, str]
    normalized: dict[str, float] = field(default_factory=dict)   # linear -> eps of the RMSNorm its output enters


def trace_block(block: nn.Module, hidden: torch.Tensor, kwargs: dict, compute_dtype: str = "float32") -> BlockTrace:
    """One forward of `block` (in `compute_dtype`, as the passes it plans), watched by hooks on every
    submodule."""
    linears = [name for name, m in block.named_modules() if isinstance(m, nn.Linear)]
    seen: list[tuple[torch.Tensor, list[str]]] = []
    starts: dict[str, list[int]] = {}
    ends: dict[str, list[int]] = {}
    outputs: dict[str, object] = {}   # held for the identity checks: ids stay unique meanwhile
    norms = {name: m for name, m in block.named_modules() if type(m).__name__.endswith("RMSNorm")}
    normalized: dict[str, float] = {}
    clock = iter(range(1 << 62))

    def before(name, args):
        starts.setdefault(name, []).append(next(clock))
        if name in norms and args:
            source = next((n for n in linears if outputs.get(n) is args[0]), None)
            if source is not None:
                normalized[source] = _norm_eps(norms[name])
        if name in linears:
            for tensor, group in seen:
                if tensor is args[0]:
                    group.append(name)
                    return
            seen.append((args[0], [name]))

    def after(name, output):
        ends.setdefault(name, []).append(next(clock))
        outputs[name] = output

    hooks = []
    for name, module in block.named_modules():
        if name:
            hooks.append(module.register_forward_pre_hook(lambda _m, a, n=name: before(n, a)))
            hooks.append(module.register_forward_hook(lambda _m, _a, o, n=name: after(n, o)))
    try:
        run_block(block, hidden, kwargs, compute_dtype)
    finally:
        for hook in hooks:
            hook.remove()
    groups = [group for _, group in seen]
    missing = [n for n in linears if not any(n in g for g in groups)]
    spans = {n: Span(starts[n][0], ends[n][0]) for n in starts if len(starts[n]) == 1 and len(ends.get(n, ())) == 1}
    tails = {}
    for name in spans:
        inner = [n for n in spans if _nested(n, name)]
        if not inner or name in linears:
            continue
        last = max(inner, key=lambda n: spans[n].end)
        if last in linears and any(leaf is outputs[last] for leaf in tree_flatten(outputs[name])[0]):
            tails[name] = last
    return BlockTrace(groups + [[n] for n in missing], spans, tails, normalized)


def _norm_eps(norm: nn.Module) -> float:
    """An RMSNorm's epsilon under the names transformers' models give it."""
    for attr in ("eps", "variance_epsilon", "epsilon"):
        value = getattr(norm, attr, None)
        if isinstance(value, float):
            return value
    return 1e-6


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


@dataclass
class _TailBatch:
    """One batch of a tail: the submodule's output leaves with the linear's output left out
    (None at `index`), and the linear's input."""

    leaves: list
    spec: object
    index: int
    linear_input: _Recorded


@dataclass
class _PendingTail:
    """A tail being recorded in one pass: the batches so far, and the current batch's linear input
    and placeholder output between the linear's call and its owner's return."""

    batches: list[_TailBatch] = field(default_factory=list)
    linear_input: _Recorded | None = None
    placeholder: torch.Tensor | None = None
    refused: bool = False          # over budget, or the owner did not return the linear's output


class ReplayCache:
    """Recorded outputs of one block's final submodules, per calibration batch; `compute_dtype`: the
    precision of the passes (`run_block`), that of the block's outputs."""

    def __init__(self, block: nn.Module, trace: BlockTrace, batches: int, budget_bytes: int,
                 compute_dtype: str = "float32"):
        self.block, self.spans, self.batches = block, trace.spans, batches
        self.compute_dtype = compute_dtype
        self.tail_linears = trace.tails
        self.budget_bytes = budget_bytes
        self.recorded: dict[str, list[_Recorded]] = {}
        self.tails: dict[str, list[_TailBatch]] = {}
        self.batch = 0
        self.peak_bytes = 0

    @property
    def nbytes(self) -> int:
        recorded = sum(_nbytes(o.value) for outs in self.recorded.values() for o in outs)
        return recorded + sum(_nbytes(t.leaves) + _nbytes(t.linear_input.value)
                              for batches in self.tails.values() for t in batches)

    def final_before(self, position: int) -> list[str]:
        """Outermost submodules that end before `position` and are not recorded yet (nor inside a
        recorded one)."""
        done = [n for n, s in self.spans.items() if s.end < position]
        outermost = [n for n in done if not any(_nested(n, other) for other in done)]
        return [n for n in outermost if n not in self.recorded
                and not any(_nested(n, other) for other in self.recorded)]

    def tail_owner(self, group: Sequence[str]) -> str | None:
        """The submodule a pass observing `group` can stop after, leaving the group's linear
        uncomputed (a tail); None when the group is not one tail linear or nothing may be held."""
        if self.budget_bytes <= 0 or len(group) != 1:
            return None
        return next((owner for owner, linear in self.tail_linears.items() if linear == group[0]), None)

    @contextlib.contextmanager
    def active(self, record: Sequence[str] = (), tail: str | None = None) -> Iterator[None]:
        """Replay what is recorded, record `record`, and record `tail` (a tail owner) as a tail;
        modules are restored on exit. A recording left incomplete (a pass that did not reach it
        for every batch) is dropped. Nothing inside `tail` is recorded: later passes rebuild the
        owner whole."""
        if self.budget_bytes <= 0:
            yield
            return
        if tail is not None:
            record = [name for name in record if not _nested(name, tail)]
        patched = []
        for name in self.recorded:
            patched.append(self._patch(name, self._replayer(name)))
        pending: dict[str, list] = {name: [] for name in record}
        for name in record:
            inner = self._tail_replayer(name) if name in self.tails else None
            patched.append(self._patch(name, self._recorder(name, pending, inner)))
        for name in set(self.tails) - set(record) - set(self.recorded):
            patched.append(self._patch(name, self._tail_replayer(name)))
        pending_tail = _PendingTail()
        if tail is not None:
            patched.append(self._patch(self.tail_linears[tail], self._placeholder(tail, pending_tail)))
            patched.append(self._patch(tail, self._tail_recorder(tail, pending_tail)))
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
        for name in [n for n in self.tails if n in self.recorded
                     or not all(t.linear_input.intact() for t in self.tails[n])]:
            del self.tails[name]  # recorded whole now, or its input was modified: recomputed
        batches = pending_tail.batches
        if tail is not None and len(batches) == self.batches and all(t.linear_input.intact() for t in batches):
            self.tails[tail] = batches
        self.peak_bytes = max(self.peak_bytes, self.nbytes)

    def outputs(self, inputs: Sequence[torch.Tensor], kwargs: Sequence[dict]) -> Iterator[torch.Tensor]:
        """The block's outputs for every batch, replaying what is recorded."""
        with self.active():
            for index, (hidden, kw) in enumerate(zip(inputs, kwargs, strict=True)):
                self.batch = index
                yield run_block(self.block, hidden, kw, self.compute_dtype)

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

    def _recorder(self, name: str, pending: dict[str, list], inner=None):
        module = self.block.get_submodule(name)
        original = inner or type(module).forward.__get__(module)

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

    def _tail_replayer(self, name: str):
        """The owner's output rebuilt from its tail: only the (now quantized) linear runs."""
        batches, linear = self.tails[name], self.tail_linears[name]

        def forward(*args, **kwargs):
            recorded = batches[self.batch]
            if not recorded.linear_input.intact():
                raise RuntimeError(f"replay cache: {linear}'s recorded input was modified in place")
            leaves = list(recorded.leaves)
            leaves[recorded.index] = self.block.get_submodule(linear)(recorded.linear_input.value)
            return tree_unflatten(leaves, recorded.spec)

        return forward

    def _placeholder(self, owner: str, pending: _PendingTail):
        """The tail linear of `owner`: records its input and returns zeros in place of its output.
        When holding the inputs would exceed the budget, the pass ends here instead (its input is
        observed by then) and no tail is kept."""
        module = self.block.get_submodule(self.tail_linears[owner])

        def forward(x, *args, **kwargs):
            if pending.refused or (not pending.batches
                                   and self.nbytes + _nbytes(x) * self.batches > self.budget_bytes):
                pending.refused = True
                raise StopPass
            pending.linear_input = _Recorded(x, _versions(x))
            pending.placeholder = x.new_zeros(*x.shape[:-1], module.out_features)
            return pending.placeholder

        return forward

    def _tail_recorder(self, owner: str, pending: _PendingTail):
        module = self.block.get_submodule(owner)
        original = type(module).forward.__get__(module)

        def forward(*args, **kwargs):
            out = original(*args, **kwargs)
            placeholder, pending.placeholder = pending.placeholder, None
            if placeholder is None:
                return out
            leaves, spec = tree_flatten(out)
            index = next((i for i, leaf in enumerate(leaves) if leaf is placeholder), None)
            if index is None:  # the output did not pass the linear's result through after all
                pending.refused = True
                return out
            leaves[index] = None
            pending.batches.append(_TailBatch(leaves, spec, index, pending.linear_input))
            return out

        return forward
