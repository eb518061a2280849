"""The decoder families we run, each a set of switches of one transformer block.

HF's `modular_qwen3.py` is Llama plus q/k norms and `modular_gemma3.py` Gemma 3 as a handful of
switches; here those switches are data, so `llama.py` has one block and no family names.
"""

from __future__ import annotations

from dataclasses import dataclass

from layerskip.errors import LayerSkipError


@dataclass(frozen=True)
class Family:
    """What sets a family's block apart from Llama's, and where its checkpoints name things."""

    model_type: str  # HF config.json `model_type`
    architecture: str  # HF class that loads it
    gguf_arch: str  # llama.cpp `general.architecture`
    qkv_bias: bool = False  # bias on the q/k/v projections (not on o)
    qk_norm: bool = False  # RMSNorm over each head of q and k before rotary
    norm_unit_offset: bool = False  # RMSNorm scales by 1 + weight (weights stored around 0)
    post_norms: bool = False  # a norm after attention and after the MLP, before each residual add
    activation: str = "silu"  # gate activation of the GLU: "silu" (SwiGLU) or "gelu_tanh" (GeGLU)
    scale_embeddings: bool = False  # embeddings multiplied by sqrt(dim)
    gguf_interleaved_rotary: bool = False  # llama.cpp permutes q/k rows for its rotary layout


LLAMA = Family("llama", "LlamaForCausalLM", "llama", gguf_interleaved_rotary=True)
FAMILIES = {
    f.model_type: f
    for f in (
        LLAMA,
        Family("mistral", "MistralForCausalLM", "llama", gguf_interleaved_rotary=True),
        Family("qwen2", "Qwen2ForCausalLM", "qwen2", qkv_bias=True),
        Family("qwen3", "Qwen3ForCausalLM", "qwen3", qk_norm=True),
        Family(
            "gemma3_text", "Gemma3ForCausalLM", "gemma3", qk_norm=True, norm_unit_offset=True, post_norms=True,
            activation="gelu_tanh", scale_embeddings=True,
        ),
    )
}
# Mistral's GGUF files are llama.cpp "llama" models.
GGUF_FAMILIES = {f.gguf_arch: f for f in FAMILIES.values() if f.model_type != "mistral"}


def family(model_type: str) -> Family:
    if model_type not in FAMILIES:
        raise LayerSkipError(
            f"unsupported architecture: model_type {model_type!r}; layerskip supports {', '.join(FAMILIES)}"
        )
    return FAMILIES[model_type]


def gguf_family(arch: str | None) -> Family:
    if arch not in GGUF_FAMILIES:
        raise LayerSkipError(f"unsupported GGUF architecture {arch!r}; layerskip supports {', '.join(GGUF_FAMILIES)}")
    return GGUF_FAMILIES[arch]
