import pytest

from layerskip.errors import LayerSkipError
from layerskip.model.config import ModelConfig

LLAMA2_7B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32, "rms_norm_eps": 1e-05,
    "vocab_size": 32000, "max_position_embeddings": 4096, "tie_word_embeddings": False, "bos_token_id": 1,
    "eos_token_id": 2,
}
LLAMA32_1B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192,
    "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8, "head_dim": 64,
    "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "vocab_size": 128256, "max_position_embeddings": 131072,
    "tie_word_embeddings": True, "eos_token_id": [128001, 128008, 128009],
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
}
CODELLAMA_7B = LLAMA2_7B | {"rope_theta": 1000000, "vocab_size": 32016, "max_position_embeddings": 16384}


def test_llama2_defaults():
    cfg = ModelConfig.from_hf(LLAMA2_7B)
    assert (cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim) == (32, 32, 32, 128)
    assert cfg.rope_theta == 10000.0 and cfg.rope_scaling is None and not cfg.tie_word_embeddings
    assert cfg.eos_token_ids == [2]


def test_llama32_rope_scaling_gqa_tied_and_eos_list():
    cfg = ModelConfig.from_hf(LLAMA32_1B)
    assert cfg.rope_scaling.factor == 32.0 and cfg.rope_scaling.original_max_position_embeddings == 8192
    assert cfg.n_kv_heads == 8 and cfg.tie_word_embeddings and cfg.eos_token_ids == [128001, 128008, 128009]


def test_codellama_rope_theta():
    assert ModelConfig.from_hf(CODELLAMA_7B).rope_theta == 1e6


def test_transformers5_rope_parameters():
    raw = {k: v for k, v in LLAMA32_1B.items() if k not in ("rope_theta", "rope_scaling")}
    raw["rope_parameters"] = LLAMA32_1B["rope_scaling"] | {"rope_theta": 500000.0}
    cfg = ModelConfig.from_hf(raw)
    assert cfg.rope_theta == 500000.0 and cfg.rope_scaling.factor == 32.0


def test_hf_round_trip():
    cfg = ModelConfig.from_hf(LLAMA32_1B)
    assert ModelConfig.from_hf(cfg.to_hf()) == cfg


# google/gemma-3-270m's config.json (transformers 4.5x format: top-level rope fields, window pattern)
GEMMA3_270M = {
    "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "hidden_size": 640,
    "intermediate_size": 2048, "num_attention_heads": 4, "num_hidden_layers": 18, "num_key_value_heads": 1,
    "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh", "max_position_embeddings": 32768,
    "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000.0, "rope_scaling": None,
    "rope_theta": 1000000.0, "sliding_window": 512, "sliding_window_pattern": 6, "vocab_size": 262144,
    "final_logit_softcapping": None, "attn_logit_softcapping": None, "bos_token_id": 2, "eos_token_id": 1,
}


def test_gemma3_270m():
    cfg = ModelConfig.from_hf(GEMMA3_270M)
    assert cfg.family == "gemma3_text" and cfg.tie_word_embeddings and cfg.head_dim == 256
    assert [i for i in range(18) if cfg.window(i) is None] == [5, 11, 17] and cfg.window(0) == 512
    assert (cfg.rope_theta, cfg.rope_local_theta, cfg.attn_scale) == (1e6, 1e4, 1 / 16)
    assert ModelConfig.from_hf(cfg.to_hf()) == cfg


def test_families_hf_round_trip():
    qwen2 = LLAMA32_1B | {"model_type": "qwen2", "use_sliding_window": True, "sliding_window": 64,
                          "max_window_layers": 12, "rope_scaling": None}
    mistral = LLAMA2_7B | {"model_type": "mistral", "sliding_window": 4096}
    for raw in (qwen2, mistral, LLAMA2_7B | {"model_type": "qwen3", "head_dim": 64}):
        cfg = ModelConfig.from_hf(raw)
        assert ModelConfig.from_hf(cfg.to_hf()) == cfg
    assert [ModelConfig.from_hf(qwen2).window(i) for i in (11, 12)] == [None, 64]
    assert ModelConfig.from_hf(mistral).window(0) == 4096


@pytest.mark.parametrize("bad,named", [
    (LLAMA2_7B | {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}, "gpt2"),
    (LLAMA2_7B | {"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "yarn"),
    (LLAMA2_7B | {"num_key_value_heads": 5}, "n_kv_heads"),
    (LLAMA2_7B | {"model_type": "qwen3", "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "dynamic"),
    (LLAMA2_7B | {"attention_bias": True}, "attention_bias"),
    (LLAMA2_7B | {"hidden_act": "gelu"}, "gelu"),
    (GEMMA3_270M | {"model_type": "gemma3"}, "gemma3"),  # the multimodal wrapper
    (GEMMA3_270M | {"attn_logit_softcapping": 50.0}, "attn_logit_softcapping"),
    (GEMMA3_270M | {"use_bidirectional_attention": True}, "use_bidirectional_attention"),
    (GEMMA3_270M | {"layer_types": ["chunked_attention"] * 18}, "chunked_attention"),
])
def test_unsupported_configs_raise(bad, named):
    with pytest.raises(LayerSkipError, match=named):
        ModelConfig.from_hf(bad)
