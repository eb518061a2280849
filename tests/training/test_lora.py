"""LoRA: trained on our fused layout, saved as a standard peft adapter with HF names."""

import json

import pytest
import torch

from layerskip.model import adapters
from layerskip.model.config import ModelConfig
from layerskip.model.llama import Transformer
from layerskip.model.loading import load_model
from layerskip.model.saving import save_pretrained
from layerskip.training import lora
from layerskip.training.config import LoraSection

CFG = dict(vocab_size=97, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, intermediate_size=48, max_seq_len=64)


def _trained_lora_model(seed=0):
    torch.manual_seed(seed)
    model = Transformer(ModelConfig(**CFG))
    lora.add_lora(model, LoraSection(enabled=True, rank=4, alpha=8))
    with torch.no_grad():  # pretend training moved B away from its zero init
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    return model


def test_only_lora_parameters_train_and_disabling_gives_the_base():
    torch.manual_seed(0)
    base = Transformer(ModelConfig(**CFG))
    model = _trained_lora_model()
    model.load_state_dict(base.state_dict(), strict=False)
    assert all(("lora_" in n) == p.requires_grad for n, p in model.named_parameters())
    tokens = torch.randint(0, 97, (1, 9))
    with torch.no_grad(), lora.adapters_disabled(model):
        torch.testing.assert_close(model(tokens), base(tokens))
    with torch.no_grad():
        assert not torch.allclose(model(tokens), base(tokens))


def test_saved_adapter_merges_back_to_the_same_model(tmp_path):
    model = _trained_lora_model()
    state = {k: v for k, v in model.state_dict().items()}
    meta = {"recommended_exit_layer": 1}
    lora.save_adapter(state, model.config, LoraSection(rank=4, alpha=8), tmp_path, "base", meta)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    hf_names = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert set(config["target_modules"]) == hf_names
    torch.manual_seed(0)
    plain = Transformer(ModelConfig(**CFG))
    meta = adapters.merge_adapter(plain, tmp_path)
    assert meta["recommended_exit_layer"] == 1
    tokens = torch.randint(0, 97, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(plain(tokens), model(tokens), atol=2e-3, rtol=2e-3)  # fp16 adapter


def test_adapter_loads_in_peft_on_transformers_llama_and_in_load_model(tmp_path):
    peft = pytest.importorskip("peft")
    from transformers import LlamaForCausalLM

    from tests.conftest import char_tokenizer

    torch.manual_seed(0)
    base = Transformer(ModelConfig(**{**CFG, "vocab_size": len(char_tokenizer())}))
    model_cfg = base.config
    model = Transformer(model_cfg)
    model.load_state_dict(base.state_dict())
    lora.add_lora(model, LoraSection(enabled=True, rank=4, alpha=8))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    save_pretrained(base, tmp_path / "base", char_tokenizer())
    lora.save_adapter(model.state_dict(), model_cfg, LoraSection(rank=4, alpha=8), tmp_path / "ad", "base", {})
    tokens = torch.randint(0, model_cfg.vocab_size, (1, 9))
    with torch.no_grad():
        want = model(tokens)
        hf = LlamaForCausalLM.from_pretrained(tmp_path / "base", dtype=torch.float32)
        hf = peft.PeftModel.from_pretrained(hf, tmp_path / "ad").eval()
        torch.testing.assert_close(hf(tokens).logits, want, atol=2e-3, rtol=2e-3)
        ours = load_model(str(tmp_path / "base"), adapter=tmp_path / "ad")
        torch.testing.assert_close(ours.model(tokens), want, atol=2e-3, rtol=2e-3)
