"""Numerical parity of our model with HF transformers, and the early exit."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from layerskip import GenerationConfig, generate_ids, load_model

PROMPTS = ["def fibonacci(n):", "The capital of France is", "Once upon a time, there was", "1, 2, 3, 5, 8,"]


def _hf_greedy(hf, ids: list[int], n: int) -> list[int]:
    out = hf.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, min_new_tokens=n,
                      pad_token_id=0, eos_token_id=None)
    return out[0, len(ids):].tolist()


def _ours_greedy(lm, ids: list[int], n: int) -> list[int]:
    return generate_ids(lm, ids, GenerationConfig(max_new_tokens=n, ignore_eos=True)).token_ids


def _hf_next_tokens(hf, ids: list[int], continuation: list[int]) -> list[int]:
    """HF's argmax after the prompt and after every prefix of `continuation`, in one forward pass:
    it equals `continuation` exactly when HF's greedy decoding gives `continuation` (one pass over
    the sequence instead of HF's generate, one per token: 4.5 s on SmolLM2 for 64 tokens)."""
    with torch.no_grad():
        logits = hf(torch.tensor([ids + continuation])).logits[0, len(ids) - 1:-1]
    return logits.argmax(-1).tolist()


@pytest.mark.parametrize("fixture", ["tiny_dir", "tiny_tied_llama3_dir"])
def test_tiny_parity_logits_and_greedy(fixture, request):
    """Untied and tied heads, GQA, default and llama3 rope: logits and greedy continuations match HF."""
    path = request.getfixturevalue(fixture)
    ours = load_model(str(path))
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = torch.randint(3, 100, (2, 80), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (ours.model(ids) - hf(ids).logits).abs().max().item()
    assert diff < 1e-4
    for seed in range(3):
        prompt = torch.randint(3, 100, (7,), generator=torch.Generator().manual_seed(seed)).tolist()
        assert _ours_greedy(ours, prompt, 64) == _hf_greedy(hf, prompt, 64)


def test_smollm2_logits_match_hf(smollm2, smollm2_hf):
    ids = smollm2.tokenizer(PROMPTS[0] + "\n    if n < 2:\n        return n", return_tensors="pt").input_ids
    with torch.no_grad():
        diff = (smollm2.model(ids) - smollm2_hf(ids).logits).abs().max().item()
    assert diff <= 1e-3


@pytest.mark.parametrize("prompt, n", [(PROMPTS[0], 64), (PROMPTS[1], 24), (PROMPTS[2], 24)])
def test_smollm2_greedy_continuation_matches_hf(smollm2, smollm2_hf, prompt, n):
    """One continuation long enough for the cache to grow well past the prompt; the others short."""
    ids = smollm2.tokenizer(prompt).input_ids
    ours = _ours_greedy(smollm2, ids, n)
    assert _hf_next_tokens(smollm2_hf, ids, ours) == ours


@pytest.mark.parametrize("exit_layer", [1, 8, 18, 30])
def test_early_exit_equals_hf_norm_of_hidden_state(smollm2, smollm2_hf, exit_layer):
    ids = smollm2.tokenizer(PROMPTS[1], return_tensors="pt").input_ids
    with torch.no_grad():
        ours = smollm2.model(ids, end_layer=exit_layer)
        hidden = smollm2_hf(ids, output_hidden_states=True).hidden_states[exit_layer]
        # HF's last hidden state already has the final norm applied.
        if exit_layer < smollm2.config.n_layers:
            hidden = smollm2_hf.model.norm(hidden)
        ref = smollm2_hf.lm_head(hidden)
    assert (ours - ref).abs().max().item() <= 1e-3


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_dtypes_load_and_track_float32(tiny_dir, dtype):
    lm = load_model(str(tiny_dir), dtype=dtype)
    assert lm.model.output.weight.dtype == getattr(torch, dtype)
    ref = load_model(str(tiny_dir))
    ids = torch.arange(3, 40)[None]
    with torch.no_grad():
        low, full = lm.model(ids).float(), ref.model(ids)
    assert (low - full).abs().max().item() < 0.1 * full.abs().max().item()
    assert len(_ours_greedy(lm, ids[0].tolist(), 16)) == 16
