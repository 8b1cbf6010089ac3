"""Expected quality loss of a precision + method, from published figures until measured ones exist.

Loss is the relative perplexity increase in percent. A model without its own published row takes
the row of the listed model closest in parameter count (a proxy, and the estimate says so);
smaller models lose more, so a proxy from a bigger model is optimistic.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from ..data import read_rows
from ..models import ModelArch, load_presets, param_breakdown


@dataclass(frozen=True)
class QualityEstimate:
    loss_pct: float | None     # None: no prior at all
    kind: str                  # published | rule_of_thumb | exact | none
    source: str
    proxy_model: str | None    # the model whose figure stands in, when not this one

    @property
    def describe(self) -> str:
        if self.loss_pct is None:
            return "no prior: measure it"
        where = f" (proxy: {self.proxy_model})" if self.proxy_model else ""
        return f"+{self.loss_pct:.1f}% ppl, {self.kind.replace('_', ' ')}{where}; {self.source}"


@lru_cache(maxsize=1)
def _priors() -> tuple[dict[str, str], ...]:
    """quality_priors.csv, read once per process: recommend asks for thousands of estimates."""
    return tuple(read_rows("quality_priors.csv"))


@lru_cache(maxsize=1)
def _preset_sizes() -> dict[str, float]:
    return {name: param_breakdown(arch).total for name, arch in load_presets().items()}


def _loss_pct(row: dict[str, str]) -> float:
    return (float(row["quantized_ppl"]) / float(row["baseline_ppl"]) - 1.0) * 100.0


def estimate_quality(arch: ModelArch, precision: str, method: str) -> QualityEstimate:
    rows = [r for r in _priors() if r["precision"] == precision and r["method"] == method]
    if not rows:
        rows = [r for r in _priors() if r["precision"] == precision]
    if not rows:
        return QualityEstimate(None, "none", "", None)
    generic = [r for r in rows if r["model"] == "*"]
    specific = [r for r in rows if r["model"] != "*"]
    if specific:
        exact = [r for r in specific if r["model"] == arch.name]
        if exact:
            row, proxy = exact[0], None
        else:
            sizes, size = _preset_sizes(), param_breakdown(arch).total
            row = min(specific, key=lambda r: abs(sizes[r["model"]] - size))
            proxy = row["model"]
        return QualityEstimate(round(_loss_pct(row), 2), row["kind"], row["source"], proxy)
    row = generic[0]
    if row["kind"] == "exact":
        return QualityEstimate(0.0, "exact", row["source"], None)
    return QualityEstimate(round(_loss_pct(row), 2), row["kind"], row["source"], None)
