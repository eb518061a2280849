"""Model configuration of every family we run, read from HF `config.json` or GGUF metadata.

One dataclass for all families: `family` names the block's switches (model/families.py); the
per-checkpoint values (sliding window and which layers use it, the local layers' rope base,
the attention scale, logit softcapping) are fields. Options we do not implement are refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from layerskip.errors import LayerSkipError
from layerskip.model.families import Family, family, gguf_family

FULL, SLIDING = "full_attention", "sliding_attention"
_ACTIVATIONS = {"silu": "silu", "gelu_tanh": "gelu_pytorch_tanh"}  # ours -> HF `hidden_act`


@dataclass
class RopeScaling:
    """Rotary frequency scaling: Llama 3 style (`rope_type == "llama3"`) or linear (`"linear"`,
    all frequencies divided by `factor`; Gemma 3's global layers)."""

    factor: float
    low_freq_factor: float = 0.0
    high_freq_factor: float = 0.0
    original_max_position_embeddings: int = 0
    rope_type: str = "llama3"


@dataclass
class ModelConfig:
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    intermediate_size: int
    max_seq_len: int = 4096
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    head_dim: int = 0
    bos_token_id: int | None = None
    eos_token_ids: list[int] = field(default_factory=list)
    # Set by our trainer: the exit layer it recommends for self-speculation.
    recommended_exit_layer: int | None = None
    # A packaged model's token ranking (file) for the reduced draft head when none is given.
    draft_vocab_ranking: str | None = None
    family: str = "llama"  # HF model_type; the block's switches are `self.arch`
    sliding_window: int | None = None  # keys a sliding-window layer sees, its own token included
    layer_types: list[str] = field(default_factory=list)  # FULL / SLIDING per layer; empty: all FULL
    rope_local_theta: float | None = None  # rope base of the sliding layers (None: rope_theta)
    query_pre_attn_scalar: float | None = None  # attention scale is its -1/2 power (None: head_dim's)
    final_logit_softcap: float | None = None  # logits = cap * tanh(logits / cap)

    def __post_init__(self) -> None:
        if self.head_dim == 0:
            self.head_dim = self.dim // self.n_heads
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "intermediate_size"):
            if getattr(self, name) <= 0:
                raise LayerSkipError(f"model config: {name} must be positive, got {getattr(self, name)}")
        if self.n_heads % self.n_kv_heads:
            raise LayerSkipError(
                f"model config: n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})"
            )
        if isinstance(self.rope_scaling, dict):
            self.rope_scaling = RopeScaling(**self.rope_scaling)
        family(self.family)
        self._check_layer_types()

    def _check_layer_types(self) -> None:
        if self.layer_types and len(self.layer_types) != self.n_layers:
            raise LayerSkipError(f"model config: {len(self.layer_types)} layer_types for {self.n_layers} layers")
        unknown = set(self.layer_types) - {FULL, SLIDING}
        if unknown:
            raise LayerSkipError(f"unsupported layer type {sorted(unknown)[0]!r}; supported: {FULL}, {SLIDING}")
        if SLIDING in self.layer_types and not self.sliding_window:
            raise LayerSkipError("model config: sliding_attention layers need a sliding_window")

    @property
    def arch(self) -> Family:
        return family(self.family)

    def window(self, layer: int) -> int | None:
        """The sliding window of `layer`, None for a global (full attention) layer."""
        return self.sliding_window if self.layer_types and self.layer_types[layer] == SLIDING else None

    @property
    def attn_scale(self) -> float | None:
        """Softmax scale of q·k (None: scaled_dot_product_attention's 1/sqrt(head_dim))."""
        return None if self.query_pre_attn_scalar is None else self.query_pre_attn_scalar**-0.5

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> ModelConfig:
        """Build from a HF `config.json` dict: Llama 2/3/3.1/3.2, CodeLlama, SmolLM2, Mistral,
        Qwen2/2.5, Qwen3, Gemma 3 text models."""
        archs = cfg.get("architectures") or []
        model_type = cfg.get("model_type") or ("llama" if "LlamaForCausalLM" in archs else None)
        fam = family(model_type)
        _refuse_hf_options(cfg, fam)
        rope_theta, scaling, local_theta = _hf_rope(cfg, fam)
        sliding_window, layer_types = _hf_layer_types(cfg, fam)
        eos = cfg.get("eos_token_id")
        n_heads = cfg["num_attention_heads"]
        gemma = fam.scale_embeddings
        return cls(
            vocab_size=cfg["vocab_size"],
            dim=cfg["hidden_size"],
            n_layers=cfg["num_hidden_layers"],
            n_heads=n_heads,
            n_kv_heads=cfg.get("num_key_value_heads") or n_heads,
            intermediate_size=cfg["intermediate_size"],
            max_seq_len=cfg.get("max_position_embeddings", 4096),
            rope_theta=rope_theta,
            rope_scaling=scaling,
            norm_eps=cfg.get("rms_norm_eps", 1e-6 if gemma else 1e-5),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", gemma)),
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // n_heads,
            bos_token_id=cfg.get("bos_token_id"),
            eos_token_ids=[] if eos is None else ([eos] if isinstance(eos, int) else list(eos)),
            recommended_exit_layer=(cfg.get("layerskip") or {}).get("recommended_exit_layer"),
            family=fam.model_type,
            sliding_window=sliding_window,
            layer_types=layer_types,
            rope_local_theta=local_theta,
            query_pre_attn_scalar=cfg.get("query_pre_attn_scalar", 256) if gemma else None,
            final_logit_softcap=cfg.get("final_logit_softcapping"),
        )

    def to_hf(self) -> dict[str, Any]:
        """The HF `config.json` dict that transformers loads as this family's model."""
        fam = self.arch
        cfg: dict[str, Any] = {
            "architectures": [fam.architecture],
            "model_type": fam.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.dim,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_seq_len,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.norm_eps,
            "tie_word_embeddings": self.tie_word_embeddings,
            "head_dim": self.head_dim,
            "hidden_activation" if fam.scale_embeddings else "hidden_act": _ACTIVATIONS[fam.activation],
            "attention_bias": False,
            "mlp_bias": False,
        }
        if fam.model_type == "qwen2":
            del cfg["attention_bias"]  # Qwen2's q/k/v bias is implied by the model type
        cfg |= self._hf_window_fields()
        if self.rope_scaling is not None:
            cfg["rope_scaling"] = _rope_scaling_to_hf(self.rope_scaling)
        if self.rope_local_theta is not None:
            cfg["rope_local_base_freq"] = self.rope_local_theta
        if self.query_pre_attn_scalar is not None:
            cfg["query_pre_attn_scalar"] = self.query_pre_attn_scalar
        if fam.scale_embeddings:
            cfg["final_logit_softcapping"] = self.final_logit_softcap
        if self.bos_token_id is not None:
            cfg["bos_token_id"] = self.bos_token_id
        if self.eos_token_ids:
            cfg["eos_token_id"] = self.eos_token_ids[0] if len(self.eos_token_ids) == 1 else self.eos_token_ids
        if self.recommended_exit_layer is not None:
            cfg["layerskip"] = {"recommended_exit_layer": self.recommended_exit_layer}
        return cfg

    def _hf_window_fields(self) -> dict[str, Any]:
        if self.family == "llama":
            return {}
        out: dict[str, Any] = {"sliding_window": self.sliding_window}
        if self.family in ("qwen2", "qwen3"):
            out["use_sliding_window"] = self.sliding_window is not None
        if self.family != "mistral":
            out["layer_types"] = self.layer_types or [FULL] * self.n_layers
        return out

    @classmethod
    def from_gguf_fields(cls, fields: dict[str, Any]) -> ModelConfig:
        """Build from decoded GGUF key/value metadata (llama.cpp's llama, qwen2, qwen3, gemma3)."""
        arch = fields.get("general.architecture")
        fam = gguf_family(arch)

        def get(key: str, default: Any = None) -> Any:
            return fields.get(f"{arch}.{key}", default)

        n_heads, dim = int(get("attention.head_count")), int(get("embedding_length"))
        n_layers = int(get("block_count"))
        head_dim = int(get("attention.key_length") or get("rope.dimension_count") or dim // n_heads)
        vocab = get("vocab_size") or len(fields.get("tokenizer.ggml.tokens", []))
        eos = fields.get("tokenizer.ggml.eos_token_id")
        gemma = fam.scale_embeddings
        window = get("attention.sliding_window") if gemma else None
        return cls(
            vocab_size=int(vocab),
            dim=dim,
            n_layers=n_layers,
            n_heads=n_heads,
            n_kv_heads=int(get("attention.head_count_kv", n_heads)),
            intermediate_size=int(get("feed_forward_length")),
            max_seq_len=int(get("context_length", 4096)),
            rope_theta=float(get("rope.freq_base", 1e6 if gemma else 10000.0)),
            rope_scaling=_gguf_rope_scaling(get("rope.scaling.type"), get("rope.scaling.factor")),
            norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
            head_dim=head_dim,
            bos_token_id=fields.get("tokenizer.ggml.bos_token_id"),
            eos_token_ids=[] if eos is None else [int(eos)],
            family=fam.model_type,
            # llama.cpp's Gemma 3: every 6th layer global, local rope base 10000, scale 1/sqrt(head_dim)
            sliding_window=None if window is None else int(window),
            layer_types=_gemma_pattern(n_layers, 6) if window else [],
            rope_local_theta=10000.0 if gemma else None,
            query_pre_attn_scalar=float(head_dim) if gemma else None,
        )


def _refuse_hf_options(cfg: dict[str, Any], fam: Family) -> None:
    """Options that change the computation and that our block does not implement."""
    ours = _ACTIVATIONS[fam.activation]
    act = cfg.get("hidden_activation") or cfg.get("hidden_act") or ours
    if act != ours:
        raise LayerSkipError(f"unsupported activation {act!r} for {fam.model_type}; supported: {ours!r}")
    for name in ("attention_bias", "mlp_bias", "use_bidirectional_attention"):
        if cfg.get(name) and not (name == "attention_bias" and fam.qkv_bias):
            raise LayerSkipError(f"unsupported option {name}=true for {fam.model_type}")
    if cfg.get("attn_logit_softcapping") is not None:
        raise LayerSkipError("unsupported option attn_logit_softcapping (attention-score softcapping)")


def _hf_rope(cfg: dict[str, Any], fam: Family) -> tuple[float, RopeScaling | None, float | None]:
    """(rope base, scaling) of the global layers and the sliding layers' own base (Gemma 3).

    transformers 5 moved rope_theta / rope_scaling into rope_parameters, keyed by layer type
    where the types differ (Gemma 3); older configs keep them at the top level.
    """
    params = dict(cfg.get("rope_parameters") or {})
    full, local = (params.get(FULL) or {}, params.get(SLIDING) or {}) if FULL in params else (params, {})
    gemma = fam.scale_embeddings
    theta = float(cfg.get("rope_theta", full.get("rope_theta", 1e6 if gemma else 10000.0)))
    scaling = _parse_rope_scaling(cfg.get("rope_scaling") or full)
    if _parse_rope_scaling(local) is not None:
        raise LayerSkipError("unsupported rope scaling on sliding-window layers")
    local_theta = cfg.get("rope_local_base_freq", local.get("rope_theta", 10000.0)) if gemma else None
    return theta, scaling, None if local_theta is None else float(local_theta)


def _hf_layer_types(cfg: dict[str, Any], fam: Family) -> tuple[int | None, list[str]]:
    """The sliding window and each layer's attention type, as the family's HF config derives them."""
    n_layers, window = cfg["num_hidden_layers"], cfg.get("sliding_window")
    if fam.model_type in ("qwen2", "qwen3") and not cfg.get("use_sliding_window"):
        window = None
    if fam.model_type == "llama" or not window:
        return None, []
    if fam.model_type == "mistral":  # Mistral ignores layer_types: every layer slides
        return int(window), [SLIDING] * n_layers
    types = cfg.get("layer_types")
    if types is None and fam.scale_embeddings:
        types = _gemma_pattern(n_layers, cfg.get("sliding_window_pattern", 6))
    if types is None:  # Qwen: the layers from max_window_layers on slide
        first = cfg.get("max_window_layers", 28)
        types = [SLIDING if i >= first else FULL for i in range(n_layers)]
    return (None, []) if set(types) <= {FULL} else (int(window), list(types))  # unknown types: __post_init__


def _gemma_pattern(n_layers: int, pattern: int) -> list[str]:
    """Gemma 3's interleaving: every `pattern`-th layer is global, the others slide."""
    return [SLIDING if (i + 1) % pattern else FULL for i in range(n_layers)]


def _parse_rope_scaling(scaling: dict[str, Any] | None) -> RopeScaling | None:
    if not scaling:
        return None
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind in (None, "default"):
        return None
    if kind == "linear":
        return RopeScaling(factor=float(scaling["factor"]), rope_type="linear")
    if kind != "llama3":
        raise LayerSkipError(f"unsupported rope_scaling type {kind!r}; supported: 'llama3', 'linear'")
    return RopeScaling(
        factor=float(scaling["factor"]),
        low_freq_factor=float(scaling["low_freq_factor"]),
        high_freq_factor=float(scaling["high_freq_factor"]),
        original_max_position_embeddings=int(scaling["original_max_position_embeddings"]),
    )


def _rope_scaling_to_hf(scaling: RopeScaling) -> dict[str, Any]:
    if scaling.rope_type == "linear":
        return {"rope_type": "linear", "factor": scaling.factor}
    return {
        "rope_type": "llama3",
        "factor": scaling.factor,
        "low_freq_factor": scaling.low_freq_factor,
        "high_freq_factor": scaling.high_freq_factor,
        "original_max_position_embeddings": scaling.original_max_position_embeddings,
    }


def _gguf_rope_scaling(kind: str | None, factor: float | None) -> RopeScaling | None:
    if kind in (None, "none") or (kind == "linear" and factor in (None, 1.0)):
        return None
    if kind != "linear":
        raise LayerSkipError(f"unsupported GGUF rope scaling {kind!r}; supported: 'linear'")
    return RopeScaling(factor=float(factor), rope_type="linear")
