"""Model configuration for the Llama family, read from HF `config.json` or GGUF metadata."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from layerskip.errors import LayerSkipError

SUPPORTED_ARCHITECTURES = ("llama", "LlamaForCausalLM")


@dataclass
class RopeScaling:
    """Llama 3 style frequency scaling (`rope_scaling.rope_type == "llama3"`)."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


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

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> ModelConfig:
        """Build from a HF `config.json` dict (Llama 2/3/3.1/3.2, CodeLlama, SmolLM2)."""
        model_type = cfg.get("model_type")
        archs = cfg.get("architectures") or []
        if model_type != "llama" and not any(a in SUPPORTED_ARCHITECTURES for a in archs):
            raise LayerSkipError(
                f"unsupported architecture: model_type={model_type!r} architectures={archs}; "
                "layerskip supports the Llama family (model_type 'llama')"
            )
        # transformers 5 moved rope_theta / rope_scaling into rope_parameters.
        rope = dict(cfg.get("rope_parameters") or {})
        rope_theta = cfg.get("rope_theta", rope.get("rope_theta", 10000.0))
        scaling = cfg.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
        eos = cfg.get("eos_token_id")
        eos_ids = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
        n_heads = cfg["num_attention_heads"]
        return cls(
            vocab_size=cfg["vocab_size"],
            dim=cfg["hidden_size"],
            n_layers=cfg["num_hidden_layers"],
            n_heads=n_heads,
            n_kv_heads=cfg.get("num_key_value_heads") or n_heads,
            intermediate_size=cfg["intermediate_size"],
            max_seq_len=cfg.get("max_position_embeddings", 4096),
            rope_theta=float(rope_theta),
            rope_scaling=_parse_rope_scaling(scaling),
            norm_eps=cfg.get("rms_norm_eps", 1e-5),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // n_heads,
            bos_token_id=cfg.get("bos_token_id"),
            eos_token_ids=eos_ids,
            recommended_exit_layer=(cfg.get("layerskip") or {}).get("recommended_exit_layer"),
        )

    def to_hf(self) -> dict[str, Any]:
        """The HF `config.json` dict that transformers' LlamaForCausalLM loads."""
        cfg: dict[str, Any] = {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
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
            "hidden_act": "silu",
            "attention_bias": False,
            "mlp_bias": False,
        }
        if self.rope_scaling is not None:
            cfg["rope_scaling"] = {"rope_type": "llama3", **asdict(self.rope_scaling)}
        if self.bos_token_id is not None:
            cfg["bos_token_id"] = self.bos_token_id
        if self.eos_token_ids:
            cfg["eos_token_id"] = self.eos_token_ids[0] if len(self.eos_token_ids) == 1 else self.eos_token_ids
        if self.recommended_exit_layer is not None:
            cfg["layerskip"] = {"recommended_exit_layer": self.recommended_exit_layer}
        return cfg

    @classmethod
    def from_gguf_fields(cls, fields: dict[str, Any]) -> ModelConfig:
        """Build from decoded GGUF key/value metadata (`general.architecture == "llama"`)."""
        arch = fields.get("general.architecture")
        if arch != "llama":
            raise LayerSkipError(f"unsupported GGUF architecture {arch!r}; layerskip supports 'llama'")

        def get(key: str, default: Any = None) -> Any:
            return fields.get(f"llama.{key}", default)

        n_heads = int(get("attention.head_count"))
        dim = int(get("embedding_length"))
        vocab = get("vocab_size") or len(fields.get("tokenizer.ggml.tokens", []))
        eos = fields.get("tokenizer.ggml.eos_token_id")
        return cls(
            vocab_size=int(vocab),
            dim=dim,
            n_layers=int(get("block_count")),
            n_heads=n_heads,
            n_kv_heads=int(get("attention.head_count_kv", n_heads)),
            intermediate_size=int(get("feed_forward_length")),
            max_seq_len=int(get("context_length", 4096)),
            rope_theta=float(get("rope.freq_base", 10000.0)),
            norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
            head_dim=int(get("rope.dimension_count", dim // n_heads)),
            bos_token_id=fields.get("tokenizer.ggml.bos_token_id"),
            eos_token_ids=[] if eos is None else [int(eos)],
        )


def _parse_rope_scaling(scaling: dict[str, Any] | None) -> RopeScaling | None:
    if not scaling:
        return None
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind in (None, "default"):
        return None
    if kind != "llama3":
        raise LayerSkipError(f"unsupported rope_scaling type {kind!r}; supported: 'llama3'")
    return RopeScaling(
        factor=float(scaling["factor"]),
        low_freq_factor=float(scaling["low_freq_factor"]),
        high_freq_factor=float(scaling["high_freq_factor"]),
        original_max_position_embeddings=int(scaling["original_max_position_embeddings"]),
    )
