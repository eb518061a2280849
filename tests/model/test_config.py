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


@pytest.mark.parametrize("bad", [
    LLAMA2_7B | {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]},
    LLAMA2_7B | {"rope_scaling": {"rope_type": "yarn", "factor": 4.0}},
    LLAMA2_7B | {"num_key_value_heads": 5},
])
def test_unsupported_configs_raise(bad):
    with pytest.raises(LayerSkipError):
        ModelConfig.from_hf(bad)
