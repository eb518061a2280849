"""Qwen2, Qwen3, Mistral and Gemma 3 as configurations of our one block: parity with HF
transformers on tiny random checkpoints saved by transformers itself, early exits, self-speculation,
batched decoding and the LayerSkip training objective."""

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM, Gemma3TextConfig, MistralConfig, Qwen2Config, Qwen3Config

from layerskip import GenerationConfig, generate_batch_ids, generate_ids, load_model
from layerskip.model.packing import unpack
from layerskip.model.saving import save_pretrained
from layerskip.training.config import EarlyExitSection
from layerskip.training.objective import LayerSkipObjective, StepPlan
from tests.conftest import char_tokenizer

WINDOW = 8  # shorter than the prompts below, so the sliding layers' masks matter
SHAPE = dict(vocab_size=105, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128, bos_token_id=1, eos_token_id=2, pad_token_id=0)
CONFIGS = {
    "qwen2": lambda: Qwen2Config(**SHAPE, tie_word_embeddings=True, rope_theta=1e6),
    "qwen3": lambda: Qwen3Config(**SHAPE, head_dim=24, tie_word_embeddings=False),  # head_dim != 64 / 4
    "mistral": lambda: MistralConfig(**SHAPE, head_dim=16, sliding_window=WINDOW, tie_word_embeddings=False),
    "gemma3": lambda: Gemma3TextConfig(
        **SHAPE, head_dim=16, sliding_window=WINDOW, query_pre_attn_scalar=24, final_logit_softcapping=30.0,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}},
    ),
}


def _randomise(hf: torch.nn.Module, seed: int) -> None:
    """Weights large enough that logits are far from ties; norm weights and biases not at 1/0."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            std = 0.1 if "norm" in name or name.endswith("bias") else 0.2
            p.copy_(torch.randn_like(p) * std + (1.0 if "norm" in name and p.mean() > 0.5 else 0.0))


@pytest.fixture(scope="module", params=list(CONFIGS))
def family(request, tmp_path_factory):
    """(ours, HF) of one family, from one checkpoint written by transformers."""
    hf = AutoModelForCausalLM.from_config(CONFIGS[request.param](), dtype=torch.float32).eval()
    _randomise(hf, seed=len(request.param))
    path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(path)
    char_tokenizer().save_pretrained(path)
    return load_model(str(path)), hf


def _prompt(seed: int, n: int = 3 * WINDOW // 2) -> list[int]:
    return torch.randint(3, 100, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_logits_match_hf(family):
    ours, hf = family
    ids = torch.randint(3, 100, (2, 5 * WINDOW), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (ours.model(ids) - hf(ids).logits).abs().max().item() <= 1e-4


def test_greedy_64_tokens_match_hf(family):
    ours, hf = family
    for seed in range(2):
        prompt = _prompt(seed)
        expected = hf.generate(torch.tensor([prompt]), max_new_tokens=64, min_new_tokens=64, do_sample=False,
                               pad_token_id=0, eos_token_id=None)[0, len(prompt):].tolist()
        got = generate_ids(ours, prompt, GenerationConfig(max_new_tokens=64, ignore_eos=True)).token_ids
        assert got == expected


@pytest.mark.parametrize("exit_layer", [1, 2, 3])
def test_early_exit_is_hf_final_norm_and_head_of_hidden_state(family, exit_layer):
    ours, hf = family
    ids = torch.tensor([_prompt(3, 2 * WINDOW)])
    with torch.no_grad():
        h = hf(ids, output_hidden_states=True).hidden_states[exit_layer]
        expected = hf.lm_head(hf.model.norm(h))
        cap = getattr(hf.config, "final_logit_softcapping", None)
        if cap is not None:
            expected = torch.tanh(expected / cap) * cap
        assert (ours.model(ids, end_layer=exit_layer) - expected).abs().max().item() <= 1e-4


@pytest.mark.parametrize("exit_layer,k", [(1, 3), (2, 5)])
def test_greedy_self_speculation_equals_autoregressive(family, exit_layer, k):
    ours, _ = family
    prompt = _prompt(4)
    ar = generate_ids(ours, prompt, GenerationConfig(max_new_tokens=48, ignore_eos=True))
    ss = generate_ids(ours, prompt, GenerationConfig(strategy="self_speculative", exit_layer=exit_layer,
                                                     num_speculations=k, max_new_tokens=48, ignore_eos=True))
    assert ss.token_ids == ar.token_ids and ss.stats.num_verifications > 0


def test_saved_checkpoint_loads_in_hf_as_the_same_family(family, tmp_path):
    ours, hf = family
    save_pretrained(ours.model, tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert type(reloaded) is type(hf)
    ids = torch.randint(3, 100, (1, 3 * WINDOW), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert (reloaded(ids).logits - hf(ids).logits).abs().max().item() <= 1e-5


@pytest.mark.parametrize("strategy", ["autoregressive", "self_speculative"])
def test_batched_rows_equal_single_sequences(family, strategy):
    """Ragged rows, some longer than the sliding window, each with its own length."""
    ours, _ = family
    prompts = [_prompt(6, 3), _prompt(7, 2 * WINDOW), _prompt(8, WINDOW + 1)]
    cfgs = [GenerationConfig(strategy=strategy, exit_layer=2, num_speculations=3, max_new_tokens=n, ignore_eos=True)
            for n in (20, 12, 16)]
    batched = generate_batch_ids(ours, prompts, cfgs)
    assert [r.token_ids for r in batched] == [generate_ids(ours, p, c).token_ids for p, c in zip(prompts, cfgs)]


def test_training_objective_runs_the_family_block_and_learns(family):
    """The objective's own layer loop (with layer dropout) gives the model's logits at every exit
    when nothing is dropped, and a few steps on every exit lower the loss of a fixed batch."""
    ours, _ = family
    model = copy.deepcopy(ours.model)
    unpack(model)  # decoding may have packed it (training refuses packed layers)
    model.train().requires_grad_(True)
    n = model.n_layers
    objective = LayerSkipObjective(model, EarlyExitSection(enabled=True, chunk_tokens=16))
    tokens = torch.randint(3, 100, (2, 2 * WINDOW + 3), generator=torch.Generator().manual_seed(9))
    exits = list(range(1, n + 1))
    with torch.no_grad():
        hidden = objective.hidden_states(tokens, StepPlan(exits, [1.0] * n, [0.0] * n))
        for e in (1, n):
            torch.testing.assert_close(model.exit_logits(hidden[e]), model(tokens, end_layer=e), atol=1e-4, rtol=1e-4)
    plan = StepPlan(exits, [1.0 / n] * n, [0.1 * i / n for i in range(n)])
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for _ in range(6):
        loss = objective(tokens[:, :-1], tokens[:, 1:], plan).loss
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None for p in model.layers.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
