"""Architecture facts of decoder-only LMs and parameter counts per component.

Sources: a local Hugging Face config.json (llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3,
gpt2, opt, mixtral) or a named preset from data/models.csv.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..data import read_rows

GATED_MLP_TYPES = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "gemma3_text", "mixtral"}
SUPPORTED_TYPES = sorted(GATED_MLP_TYPES | {"gpt2", "opt"})


@dataclass(frozen=True)
class ModelArch:
    name: str
    model_type: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    experts: int = 1               # MoE experts per layer (1 = dense)
    experts_per_token: int = 1
    qkv_bias: bool = False
    max_positions: int = 0         # learned position embeddings (gpt2, opt)
    published_params_b: float | None = None
    published_active_b: float | None = None
    source: str = ""

    @property
    def is_moe(self) -> bool:
        return self.experts > 1

    @property
    def kv_values_per_token(self) -> int:
        """K and V elements cached per token over all layers: 2 x layers x kv_heads x head_dim."""
        return 2 * self.layers * self.kv_heads * self.head_dim


@dataclass(frozen=True)
class LinearShape:
    """A quantizable linear layer inside the decoder blocks (count = copies in the whole model)."""

    name: str
    out_features: int
    in_features: int
    count: int
    expert: bool = False

    @property
    def params(self) -> int:
        return self.out_features * self.in_features * self.count


@dataclass(frozen=True)
class ParamBreakdown:
    embeddings: int
    positions: int
    attention: int
    mlp: int
    router: int
    norms_biases: int
    lm_head: int       # 0 when tied to the embeddings
    total: int
    active: int        # per token (MoE: only the routed experts)


def linear_shapes(arch: ModelArch) -> list[LinearShape]:
    """Decoder-block linears; lm_head and embeddings are counted separately."""
    h, n = arch.hidden, arch.layers
    q_out, kv_out = arch.heads * arch.head_dim, arch.kv_heads * arch.head_dim
    attn = [LinearShape("q_proj", q_out, h, n), LinearShape("k_proj", kv_out, h, n),
            LinearShape("v_proj", kv_out, h, n), LinearShape("o_proj", h, q_out, n)]
    copies = n * arch.experts
    if arch.model_type in GATED_MLP_TYPES:
        mlp = [LinearShape("gate_proj", arch.intermediate, h, copies, arch.is_moe),
               LinearShape("up_proj", arch.intermediate, h, copies, arch.is_moe),
               LinearShape("down_proj", h, arch.intermediate, copies, arch.is_moe)]
    else:
        mlp = [LinearShape("fc1", arch.intermediate, h, copies), LinearShape("fc2", h, arch.intermediate, copies)]
    return attn + mlp


def _norms_and_biases(arch: ModelArch) -> int:
    h, n = arch.hidden, arch.layers
    if arch.model_type in ("gpt2", "opt"):
        # LayerNorm weight+bias (2 per block + final) and a bias on every linear
        per_layer = 2 * 2 * h + (arch.heads * arch.head_dim + 2 * arch.kv_heads * arch.head_dim + h) \
            + arch.intermediate + h
        return n * per_layer + 2 * h
    norms_per_layer = 4 if arch.model_type.startswith("gemma") and arch.model_type != "gemma" else 2
    per_layer = norms_per_layer * h
    if arch.model_type in ("qwen3", "gemma3", "gemma3_text"):
        per_layer += 2 * arch.head_dim  # q_norm, k_norm
    if arch.qkv_bias:
        per_layer += (arch.heads + 2 * arch.kv_heads) * arch.head_dim
    return n * per_layer + h


def param_breakdown(arch: ModelArch) -> ParamBreakdown:
    shapes = linear_shapes(arch)
    attention = sum(s.params for s in shapes if s.name in ("q_proj", "k_proj", "v_proj", "o_proj"))
    mlp = sum(s.params for s in shapes) - attention
    embeddings = arch.vocab * arch.hidden
    positions = arch.max_positions * arch.hidden
    router = arch.layers * arch.hidden * arch.experts if arch.is_moe else 0
    lm_head = 0 if arch.tied else arch.vocab * arch.hidden
    norms = _norms_and_biases(arch)
    total = embeddings + positions + attention + mlp + router + norms + lm_head
    active = total - mlp + mlp * arch.experts_per_token // arch.experts
    return ParamBreakdown(embeddings, positions, attention, mlp, router, norms, lm_head, total, active)


def load_presets() -> dict[str, ModelArch]:
    presets = {}
    for row in read_rows("models.csv"):
        hidden, heads = int(row["hidden"]), int(row["heads"])
        presets[row["id"]] = ModelArch(
            name=row["id"], model_type=row["model_type"], hidden=hidden, layers=int(row["layers"]),
            heads=heads, kv_heads=int(row["kv_heads"]), head_dim=int(row["head_dim"] or hidden // heads),
            intermediate=int(row["intermediate"]), vocab=int(row["vocab"]), tied=row["tied"] == "true",
            experts=int(row["experts"] or 1), experts_per_token=int(row["experts_per_token"] or 1),
            qkv_bias=row["qkv_bias"] == "true",
            published_params_b=float(row["published_params_b"]) if row["published_params_b"] else None,
            published_active_b=float(row["published_active_b"]) if row["published_active_b"] else None,
            source=row["source"])
    return presets


def _require(config: dict, key: str, where: str):
    if key not in config or config[key] is None:
        raise ValueError(f"{where}: config.json has no '{key}'")
    value = config[key]
    if isinstance(value, int | float) and value <= 0:
        raise ValueError(f"{where}: '{key}' must be positive, got {value}")
    return value


def arch_from_config(config: dict, name: str = "config.json") -> ModelArch:
    """ModelArch from a parsed Hugging Face config.json."""
    model_type = config.get("model_type")
    if model_type is None and isinstance(config.get("text_config"), dict):
        config = config["text_config"]
        model_type = config.get("model_type")
    if model_type not in SUPPORTED_TYPES:
        raise ValueError(f"{name}: unsupported model_type {model_type!r}; supported: {', '.join(SUPPORTED_TYPES)}")
    if model_type == "gpt2":
        hidden, heads = _require(config, "n_embd", name), _require(config, "n_head", name)
        return ModelArch(name=name, model_type="gpt2", hidden=hidden, layers=_require(config, "n_layer", name),
                         heads=heads, kv_heads=heads, head_dim=hidden // heads,
                         intermediate=config.get("n_inner") or 4 * hidden, vocab=_require(config, "vocab_size", name),
                         tied=True, qkv_bias=True, max_positions=config.get("n_positions", 1024), source=name)
    hidden, heads = _require(config, "hidden_size", name), _require(config, "num_attention_heads", name)
    common = dict(name=name, model_type=model_type, hidden=hidden, layers=_require(config, "num_hidden_layers", name),
                  heads=heads, vocab=_require(config, "vocab_size", name), source=name)
    if model_type == "opt":
        if config.get("word_embed_proj_dim", hidden) != hidden:
            raise ValueError(f"{name}: OPT with word_embed_proj_dim != hidden_size is not supported")
        return ModelArch(**common, kv_heads=heads, head_dim=hidden // heads,
                         intermediate=_require(config, "ffn_dim", name),
                         tied=config.get("tie_word_embeddings", True), qkv_bias=True,
                         max_positions=config.get("max_position_embeddings", 2048) + 2)
    kv_heads = config.get("num_key_value_heads") or heads
    default_tied = model_type.startswith("gemma")
    return ModelArch(**common, kv_heads=kv_heads, head_dim=config.get("head_dim") or hidden // heads,
                     intermediate=_require(config, "intermediate_size", name),
                     tied=config.get("tie_word_embeddings", default_tied),
                     experts=config.get("num_local_experts") or 1,
                     experts_per_token=config.get("num_experts_per_tok") or 1,
                     qkv_bias=model_type == "qwen2" or bool(config.get("attention_bias", False)))


def resolve_arch(model: str) -> ModelArch:
    """A preset name, a model directory holding config.json, or a config.json path."""
    path = Path(model)
    if path.is_dir():
        path = path / "config.json"
    if path.name.endswith(".json") or path.exists():
        if not path.exists():
            raise FileNotFoundError(f"no config.json at {path}")
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        return arch_from_config(config, str(path))
    presets = load_presets()
    key = model.strip().lower()
    if key not in presets:
        raise ValueError(f"unknown model {model!r}: not a preset ({', '.join(presets)}) nor a path to config.json")
    return presets[key]
