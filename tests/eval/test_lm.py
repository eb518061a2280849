"""The lm-eval model: parity with lm-eval's own `hf` model, early exit, strategies, options."""

import json

import pytest
from lm_eval.api.instance import Instance
from lm_eval.api.registry import get_model

from layerskip.errors import LayerSkipError
from layerskip.eval.harness import TASKS_DIR
from layerskip.eval.lm import LayerSkipLM

LOGLIKELIHOOD = [
    ("Question: What is the capital of France?\nAnswer:", " Paris"),
    ("Question: What is the capital of France?\nAnswer:", " London"),
    ("The quick brown fox jumps over the ", "lazy dog."),  # trailing space moves to the continuation
    ("", "Hello world, this starts from the prefix token."),  # empty context
    ("def add(a, b):\n", "    return a + b\n"),
]
DOCUMENTS = ["Once upon a time, there was a small village by the sea. Its people fished every day.", "1, 2, 3, 5, 8"]


def _instances(kind, args):
    return [Instance(kind, {}, a, i) for i, a in enumerate(args)]


def _gen_requests(n=3):
    rows = [json.loads(x) for x in (TASKS_DIR / "layerskip_gen.jsonl").read_text().splitlines()][:n]
    kwargs = {"until": ["\n", ".", ","], "max_gen_toks": 12, "do_sample": False}
    return _instances("generate_until", [(r["prompt"], kwargs) for r in rows])


@pytest.fixture(scope="module")
def hflm(smollm2, smollm2_hf):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=smollm2_hf, tokenizer=smollm2.tokenizer, batch_size=8, max_length=16)


def test_registered_with_lm_eval_next_to_its_own_models():
    assert get_model("layerskip") is LayerSkipLM
    assert get_model("hf").__name__ == "HFLM"  # registering ours must not hide lm-eval's lazy built-ins


def test_loglikelihood_matches_lm_eval_hf_model(smollm2, hflm):
    ours = LayerSkipLM(smollm2, batch_size=3, max_length=16)
    requests = _instances("loglikelihood", LOGLIKELIHOOD)
    expected = hflm.loglikelihood(requests, disable_tqdm=True)
    got = ours.loglikelihood(requests, disable_tqdm=True)
    for (lp, greedy), (ref_lp, ref_greedy) in zip(got, expected):
        assert lp == pytest.approx(ref_lp, abs=1e-3)
        assert greedy == ref_greedy
    assert got[0][0] > got[1][0]  # Paris over London


def test_rolling_loglikelihood_matches_lm_eval_hf_model(smollm2, hflm):
    """max_length=16 splits the longer document into several windows."""
    ours = LayerSkipLM(smollm2, batch_size=2, max_length=16)
    requests = _instances("loglikelihood_rolling", [(d,) for d in DOCUMENTS])
    expected = hflm.loglikelihood_rolling(requests, disable_tqdm=True)
    assert ours.loglikelihood_rolling(requests, disable_tqdm=True) == pytest.approx(expected, abs=1e-3)


def test_early_exit_scores_at_the_exit_layer(smollm2):
    full = LayerSkipLM(smollm2, batch_size=4)
    early = LayerSkipLM(smollm2, strategy="early_exit", exit_layer=8, batch_size=4)
    speculative = LayerSkipLM(smollm2, strategy="self_speculative", exit_layer=8, batch_size=4)
    requests = _instances("loglikelihood", LOGLIKELIHOOD[:3])
    a, b, c = (m.loglikelihood(requests, disable_tqdm=True) for m in (full, early, speculative))
    assert c == a  # self-speculation is lossless: scored at full depth
    assert all(abs(x[0] - y[0]) > 0.1 for x, y in zip(a, b))
    assert early.get_model_info()["layerskip"]["scoring_exit_layer"] == 8


def test_self_speculative_greedy_answers_equal_autoregressive(smollm2):
    requests = _gen_requests()
    ar = LayerSkipLM(smollm2)
    spec = LayerSkipLM(smollm2, strategy="self_speculative", exit_layer=6, num_speculations=3)
    answers = ar.generate_until(requests, disable_tqdm=True)
    assert spec.generate_until(requests, disable_tqdm=True) == answers
    assert answers[0].strip() == "Paris" and not any(c in "".join(answers) for c in "\n.,")
    gen = spec.get_model_info()["layerskip"]["generation"]
    assert gen["requests"] == len(requests) and gen["num_drafted"] > 0
    assert 0 <= gen["acceptance_rate"] <= 1 and gen["mean_accepted_length"] >= 1
    assert "acceptance_rate" not in ar.get_model_info()["layerskip"]["generation"]


def test_generation_kwargs(tiny):
    lm = LayerSkipLM(tiny, max_gen_toks=5)
    cfg = lm._request_config({"until": "\n\n"})
    assert (cfg.max_new_tokens, cfg.stop_strings, cfg.do_sample) == (5, ["\n\n"], False)
    sampled = lm._request_config({"do_sample": True, "temperature": 0.5, "top_p": 0.9})
    assert sampled.do_sample and sampled.seed is not None and sampled.top_p == 0.9
    with pytest.raises(LayerSkipError, match="num_beams"):
        lm._request_config({"num_beams": 4})
    with pytest.raises(LayerSkipError, match="context length"):
        lm._request_config({"max_gen_toks": tiny.config.max_seq_len - 1})
    answers = lm.generate_until(_instances("generate_until", [("abc", {"max_gen_toks": 3})]), disable_tqdm=True)
    assert len(answers) == 1 and lm.totals.new_tokens <= 3


@pytest.mark.parametrize("kwargs, match", [
    ({"batch_size": "auto"}, "batch_size"),
    ({"batch_size": 0}, "batch_size"),
    ({"strategy": "beam"}, "strategy"),
    ({"strategy": "self_speculative", "exit_layer": 4}, "exit layer"),
    ({"max_gen_toks": 0}, "max_gen_toks"),
])
def test_bad_model_args_raise(tiny, kwargs, match):
    with pytest.raises(LayerSkipError, match=match):
        LayerSkipLM(tiny, **kwargs)
