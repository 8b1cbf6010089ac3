"""What differs between architectures in a GGUF file, one entry per architecture.

Sources: ggml-org/llama.cpp `convert_hf_to_gguf.py` and `conversion/gemma.py` (what the converter
writes: names, keys, weight transforms), `src/models/gemma3.cpp` and `src/llama-hparams.cpp` (what
llama.cpp reads back and what it assumes when a key is absent). Adding an architecture is adding an
entry to ARCHES; gguf.py itself knows no architecture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .base import ExportError

# Hugging Face names outside the decoder blocks -> GGUF names (the same for every entry here)
REST_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
              "lm_head.weight": "output.weight"}

_LINEARS = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
            "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
            "mlp.down_proj": "ffn_down"}


@dataclass(frozen=True)
class GGUFArch:
    name: str                                   # general.architecture, and the prefix of its keys
    block_names: dict[str, str]                 # block-relative HF name -> GGUF name after "blk.N."
    permute_qk: bool                            # q/k rows interleaved per head for llama.cpp's rotary layout
    norm_offset: float                          # added to every norm weight on the way out
    hparams: Callable[[dict], dict[str, object]]  # GGUFWriter add_* method -> value, from config.json
    check: Callable[[dict], None]               # raises ExportError for a config llama.cpp would run wrongly
    spm_add_space_prefix: bool | None = None    # None: tokenizer.model not read; else the flag the converter sets


def head_dim(config: dict) -> int:
    return config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]


def rope_parameters(config: dict, layer_type: str | None = None) -> dict:
    """transformers 5 nests rope settings in rope_parameters (per layer type for Gemma-3); older
    configs keep rope_theta / rope_scaling at the top level."""
    rope = config.get("rope_parameters") or {}
    if layer_type is not None and isinstance(rope.get(layer_type), dict):
        return rope[layer_type]
    if rope and all(isinstance(value, dict) for value in rope.values()):
        return {}  # only per-layer-type entries, none for the type asked
    legacy = dict(config.get("rope_scaling") or {})
    if "rope_theta" in config:
        legacy.setdefault("rope_theta", config["rope_theta"])
    return rope or legacy


def common_hparams(config: dict) -> dict[str, object]:
    """Keys every entry writes, as the converter's TextModel.set_gguf_parameters does."""
    heads = config["num_attention_heads"]
    return {"add_context_length": config.get("max_position_embeddings", 4096),
            "add_embedding_length": config["hidden_size"],
            "add_block_count": config["num_hidden_layers"],
            "add_feed_forward_length": config["intermediate_size"],
            "add_head_count": heads,
            "add_head_count_kv": config.get("num_key_value_heads") or heads,
            "add_layer_norm_rms_eps": float(config.get("rms_norm_eps", 1e-6)),
            "add_key_length": head_dim(config),
            "add_value_length": head_dim(config),
            "add_vocab_size": config["vocab_size"]}


def _llama_hparams(config: dict) -> dict[str, object]:
    return {"add_rope_freq_base": float(rope_parameters(config).get("rope_theta", 10000.0)),
            "add_rope_dimension_count": head_dim(config)}


def _llama_check(config: dict) -> None:
    rope_type = rope_parameters(config).get("rope_type", "default")
    if rope_type not in ("default", None):
        raise ExportError(f"GGUF export writes unscaled rotary embeddings; this model uses {rope_type!r} scaling")


LLAMA_BLOCK_NAMES = {"input_layernorm.weight": "attn_norm.weight",
                     "post_attention_layernorm.weight": "ffn_norm.weight", **_LINEARS}

# Gemma-3: four norms per block, and RMSNorm on each head's q and k. The same HF name
# post_attention_layernorm is the *post*-attention norm here and the pre-FFN norm in Llama.
GEMMA3_BLOCK_NAMES = {"input_layernorm.weight": "attn_norm.weight",
                      "self_attn.q_norm.weight": "attn_q_norm.weight",
                      "self_attn.k_norm.weight": "attn_k_norm.weight",
                      "post_attention_layernorm.weight": "post_attention_norm.weight",
                      "pre_feedforward_layernorm.weight": "ffn_norm.weight",
                      "post_feedforward_layernorm.weight": "post_ffw_norm.weight", **_LINEARS}

GEMMA3_SWA_PATTERN = 6  # llama.cpp's gemma3 default when the file names no pattern: 5 sliding, 1 full


def gemma3_sliding_layers(config: dict) -> list[bool]:
    """Which blocks attend within the sliding window, from layer_types (transformers 5) or the
    older sliding_window_pattern."""
    layers = config["num_hidden_layers"]
    if config.get("layer_types"):
        return [kind == "sliding_attention" for kind in config["layer_types"]]
    pattern = config.get("sliding_window_pattern") or config.get("_sliding_window_pattern") or GEMMA3_SWA_PATTERN
    return [(i + 1) % pattern != 0 for i in range(layers)]


def default_sliding_layers(layers: int, pattern: int = GEMMA3_SWA_PATTERN) -> list[bool]:
    """llama.cpp's set_swa_pattern(pattern) without dense_first."""
    return [i % pattern < pattern - 1 for i in range(layers)]


def gemma3_rope(config: dict, layer_type: str) -> dict:
    """Rope settings of one Gemma-3 layer type: nested in rope_parameters (transformers 5), or the
    older top-level rope_theta / rope_scaling (full) and rope_local_base_freq (sliding, unscaled)."""
    nested = (config.get("rope_parameters") or {}).get(layer_type)
    if isinstance(nested, dict):
        return nested
    if layer_type == "sliding_attention":
        return {"rope_theta": config.get("rope_local_base_freq", 10_000.0)}
    return rope_parameters(config)


def _gemma3_hparams(config: dict) -> dict[str, object]:
    import gguf

    full = gemma3_rope(config, "full_attention")
    local = gemma3_rope(config, "sliding_attention")
    out = {"add_rope_freq_base": float(full.get("rope_theta", 1_000_000.0))}
    if full.get("rope_type") == "linear":  # Gemma-3 4B and larger: global layers stretched 8x
        out["add_rope_scaling_type"] = gguf.RopeScalingType.LINEAR
        out["add_rope_scaling_factor"] = float(full["factor"])
    if "rope_theta" in local:
        out["add_rope_freq_base_swa"] = float(local["rope_theta"])
    sliding = gemma3_sliding_layers(config)
    if config.get("sliding_window") and any(sliding):
        out["add_sliding_window"] = int(config["sliding_window"])
        # the converter writes no pattern and llama.cpp assumes 5 sliding + 1 full: name the
        # layers only when they differ from that, so a stock Gemma-3 file matches the converter's
        if sliding != default_sliding_layers(len(sliding)):
            out["add_sliding_window_pattern"] = sliding
    if config.get("final_logit_softcapping"):
        out["add_final_logit_softcapping"] = float(config["final_logit_softcapping"])
    return out


def llama_cpp_gemma3_query_scale(config: dict) -> float:
    """The query scaling llama.cpp hard-codes for gemma3 (it reads no key for it): 1/sqrt(head_dim),
    except for its 62-block (27B) type, which uses 1/sqrt(hidden / heads)."""
    if config["num_hidden_layers"] == 62:
        return (config["hidden_size"] / config["num_attention_heads"]) ** -0.5
    return head_dim(config) ** -0.5


def _gemma3_check(config: dict) -> None:
    if config.get("attn_logit_softcapping"):
        raise ExportError("llama.cpp's gemma3 has no attention logit soft-capping; this config sets "
                          f"attn_logit_softcapping={config['attn_logit_softcapping']}")
    want = float(config.get("query_pre_attn_scalar") or head_dim(config)) ** -0.5
    if abs(llama_cpp_gemma3_query_scale(config) / want - 1) > 1e-6:
        raise ExportError(f"llama.cpp scales gemma3 queries by {llama_cpp_gemma3_query_scale(config):.6g}, this "
                          f"model by query_pre_attn_scalar^-0.5 = {want:.6g}; it would run wrongly there")
    for kind in ("full_attention", "sliding_attention"):
        rope_type = gemma3_rope(config, kind).get("rope_type", "default")
        if rope_type not in ("default", None) and not (kind == "full_attention" and rope_type == "linear"):
            raise ExportError(f"GGUF export maps Gemma-3's linear rope scaling of full attention only; "
                              f"{kind} uses {rope_type!r}")


ARCHES = {
    "llama": GGUFArch("llama", LLAMA_BLOCK_NAMES, permute_qk=True, norm_offset=0.0,
                      hparams=_llama_hparams, check=_llama_check),
    # Gemma: NEOX-style rotary (halves, not pairs), so llama.cpp takes q/k rows as HF stores them;
    # its RMSNorm computes x * (1 + w) and llama.cpp x * w, so the converter adds 1 to every norm
    "gemma3": GGUFArch("gemma3", GEMMA3_BLOCK_NAMES, permute_qk=False, norm_offset=1.0,
                       hparams=_gemma3_hparams, check=_gemma3_check, spm_add_space_prefix=False),
}

# config.json model_type -> entry
MODEL_TYPES = {"llama": "llama", "mistral": "llama", "gemma3_text": "gemma3", "gemma3": "gemma3"}


def arch_for(config: dict) -> GGUFArch:
    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ExportError(f"GGUF export maps {', '.join(MODEL_TYPES)} models; {model_type!r} is not mapped yet")
    if model_type == "gemma3" and "text_config" in config:
        raise ExportError("GGUF export writes Gemma-3's language model only; export a gemma3_text checkpoint")
    return ARCHES[MODEL_TYPES[model_type]]
