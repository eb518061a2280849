"""Reduced-vocabulary draft head: lossless (greedy identical, sampling still exact in law), drafts
only ever propose tokens of the subset, rankings from corpora and files."""

import json
import types

import pytest
import torch

from layerskip import GenerationConfig, LayerSkipError, generate_ids, load_model
from layerskip.generation.draft_vocab import (
    DraftHead,
    configured_draft_head,
    draft_head,
    rank_tokens,
    read_ranking,
    select_ids,
)
from layerskip.generation.output import ACCEPTED, REJECTED
from layerskip.generation.self_speculative import Draft, accept_sampled
from layerskip.model.config import ModelConfig
from layerskip.model.llama import Transformer
from layerskip.model.synthetic import random_model, silence_layers

PROMPT = [5, 6, 7, 8, 9]


def _run(lm, on_tokens=None, **kw):
    base = dict(strategy="self_speculative", exit_layer=2, num_speculations=4, max_new_tokens=40, ignore_eos=True)
    return generate_ids(lm, PROMPT, GenerationConfig(**(base | kw)), on_tokens)


@pytest.mark.parametrize("size", [1, 10, 60])
def test_greedy_output_is_unchanged_and_drafts_stay_in_the_subset(tiny, size):
    ar = generate_ids(tiny, PROMPT, GenerationConfig(max_new_tokens=40, ignore_eos=True))
    drafted: list[int] = []
    res = _run(tiny, lambda ids, kind: drafted.extend(ids) if kind in (ACCEPTED, REJECTED) else None,
               draft_vocab_size=size)
    assert res.token_ids == ar.token_ids
    allowed = set(select_ids(None, size, tiny.config.vocab_size, tiny.config.eos_token_ids))
    assert drafted and set(drafted) <= allowed


def _softcapped_gemma3() -> Transformer:
    """A tiny Gemma-3 whose logits go far past its final softcap, so a skipped cap shows."""
    cfg = ModelConfig(vocab_size=128, dim=32, n_layers=2, n_heads=2, n_kv_heads=1, intermediate_size=64,
                      family="gemma3_text", tie_word_embeddings=True, final_logit_softcap=0.5)
    return random_model(cfg, std=0.2)


@pytest.mark.parametrize("which", ["tiny", "softcapped gemma3"])
def test_reduced_head_scores_equal_the_full_head_on_the_subset(tiny, which):
    model = tiny.model if which == "tiny" else _softcapped_gemma3()
    ids = select_ids(None, 30, model.config.vocab_size, [])
    head = draft_head(model, ids)
    h = torch.randn(1, 3, model.config.dim)
    with torch.no_grad():
        full = model.exit_logits(h)
        assert torch.allclose(head.logits(model, h), full[..., ids], atol=1e-6)  # other matmul shapes round differently
        assert torch.allclose(draft_head(model, None).logits(model, h), full)
    assert draft_head(model, ids) is head  # built once per model and id set
    if which != "tiny":
        assert full.abs().max() <= 0.5 < model.output(model.norm(h)).abs().max()


def test_perfect_draft_loses_acceptance_only_outside_the_subset(tiny_dir):
    lm = load_model(str(tiny_dir))
    silence_layers(lm.model, 2)
    full = _run(lm)
    assert full.stats.acceptance_rate == 1.0
    needed = sorted(set(full.token_ids))
    assert _run(lm, draft_vocab_size=lm.config.vocab_size - 1, draft_vocab_file=None).token_ids == full.token_ids
    # A ranking that holds exactly the tokens the model produces keeps acceptance at 100 %.
    assert _run(lm, draft_vocab_size=len(needed) + 1, draft_vocab_file=None).token_ids == full.token_ids
    assert select_ids(needed, None, lm.config.vocab_size, []) == needed


def test_speculative_sampling_with_a_reduced_draft_keeps_the_target_law():
    """Drafts over 2 of 6 tokens (q zero elsewhere): the first committed token still follows p."""
    p_logits = torch.tensor([1.0, 0.2, 0.5, -0.3, 0.8, 0.0])
    head = DraftHead(torch.nn.Identity(), torch.tensor([1, 4]))
    q_small = torch.tensor([0.7, 0.3])
    cfg = GenerationConfig(do_sample=True)
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(6)
    n = 6000
    for _ in range(n):
        d = head.to_vocab(torch.multinomial(q_small, 1, generator=gen))
        draft = Draft(d, head.full_probs(q_small[None], 6))
        n_acc, new = accept_sampled(draft, torch.stack([p_logits, p_logits]), cfg, gen)
        counts[int(d) if n_acc else new] += 1
    assert 0.5 * (counts / n - p_logits.softmax(-1)).abs().sum() < 0.04


def test_rank_tokens_counts_a_corpus(tiny):
    ranking = rank_tokens(tiny.tokenizer, ["aaa b", "a"])
    a, b = tiny.tokenizer("a").input_ids[-1], tiny.tokenizer("b").input_ids[-1]
    assert ranking[0] == a and b in ranking


def test_ranking_files_json_and_plain(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps([7, 3, 9]))
    (tmp_path / "r.txt").write_text("7\n3 9\n")
    assert read_ranking(tmp_path / "r.json") == read_ranking(tmp_path / "r.txt") == [7, 3, 9]
    assert select_ids([7, 3, 9], 2, 105, [2]) == [2, 7]
    assert select_ids([7, 3, 9], 6, 105, [2]) == [0, 1, 2, 3, 7, 9]  # filled up in id order
    (tmp_path / "bad.txt").write_text("7 x")
    with pytest.raises(LayerSkipError):
        read_ranking(tmp_path / "bad.txt")
    with pytest.raises(LayerSkipError):
        read_ranking(tmp_path / "missing.json")
    with pytest.raises(LayerSkipError):
        select_ids([500], 3, 105, [])
    with pytest.raises(LayerSkipError):
        GenerationConfig(strategy="self_speculative", draft_vocab_size=0)


def test_a_models_own_ranking_is_the_default_and_a_file_overrides_it(tiny, tmp_path, monkeypatch):
    own, given = tmp_path / "own.json", tmp_path / "given.json"
    own.write_text(json.dumps([50, 40, 30]))
    given.write_text(json.dumps([60, 70]))
    monkeypatch.setattr(tiny.config, "draft_vocab_ranking", str(own))
    eos = tiny.config.eos_token_ids

    def ids(**kw):
        head = configured_draft_head(tiny.model, GenerationConfig(strategy="self_speculative", **kw))
        return None if head.ids is None else head.ids.tolist()

    assert ids() is None  # no size, no file: the model's own head
    assert ids(draft_vocab_size=len(eos) + 2) == sorted({*eos, 50, 40})
    assert ids(draft_vocab_size=len(eos) + 2, draft_vocab_file=str(given)) == sorted({*eos, 60, 70})


def test_rank_tokens_breaks_ties_by_id():
    tokenizer = lambda text, add_special_tokens: types.SimpleNamespace(input_ids=[int(t) for t in text.split()])  # noqa: E731
    assert rank_tokens(tokenizer, ["9 3 3 7", "9 1"]) == [3, 9, 1, 7]
