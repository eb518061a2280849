"""The OpenAI fields real clients send: prompt lists and token ids, n, logprobs and echo,
penalties and logit_bias at their defaults and not, tokenizer endpoints; on the tiny model."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator

import httpx
import openai
import pytest
import torch

from layerskip.eval.scoring import score_continuations
from layerskip.model.loaded import LoadedModel
from layerskip.serve.app import create_app
from layerskip.serve.background import serving
from layerskip.serve.config import ServerConfig

PROMPT = "The quick brown fox"
GREEDY = {"model": "tiny", "temperature": 0, "max_tokens": 12}


@pytest.fixture(scope="module")
def url(tiny: LoadedModel) -> Iterator[str]:
    cfg = ServerConfig(served_model_name="tiny", max_tokens=64, max_prompt_tokens=200)
    with serving(create_app(tiny, cfg)) as base:
        yield base


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=30)


def post(url: str, endpoint: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}/{endpoint}", json=body, timeout=30)


def model_logprobs(tiny: LoadedModel, ids: list[int]) -> torch.Tensor:
    """log p(ids[t] | ids[:t]) for t >= 1, from a plain forward pass (independent of the server's)."""
    with torch.no_grad():
        logprobs = tiny.model(torch.tensor([ids]))[0].float().log_softmax(-1)
    return logprobs[:-1].gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]


def test_default_valued_standard_fields_are_accepted(url):
    c = client(url)
    plain = c.completions.create(prompt=PROMPT, **GREEDY)
    sdk = c.completions.create(prompt=PROMPT, frequency_penalty=0, presence_penalty=0, logit_bias={}, user="u1",
                               best_of=1, n=1, **GREEDY)
    assert sdk.choices[0].text == plain.choices[0].text
    chat = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": 0, "max_tokens": 8}
    defaults = {"frequency_penalty": 0, "presence_penalty": 0, "logit_bias": {}, "user": "u1", "tools": [],
                "tool_choice": "none", "parallel_tool_calls": True, "response_format": {"type": "text"},
                "store": False, "metadata": {}, "service_tier": "auto", "logprobs": False}
    a, b = post(url, "v1/chat/completions", chat), post(url, "v1/chat/completions", chat | defaults)
    assert a.status_code == b.status_code == 200, b.text
    assert a.json()["choices"][0]["message"] == b.json()["choices"][0]["message"]


def test_an_sdk_reply_sent_back_as_history_is_accepted(url):
    c = client(url)
    first = [{"role": "user", "content": "hi"}]
    reply = c.chat.completions.create(model="tiny", messages=first, temperature=0, max_tokens=4).choices[0].message
    history = [*first, reply.model_dump(), {"role": "user", "content": "and?"}]
    assert set(history[1]) > {"role", "content"}  # refusal, tool_calls, audio, ... at their empty values
    out = c.chat.completions.create(model="tiny", messages=history, temperature=0, max_tokens=4,
                                    extra_body={"safety_identifier": "s", "prompt_cache_key": "k"})
    assert out.usage.prompt_tokens > len(first[0]["content"])


def test_three_prompts_give_the_three_single_answers(url):
    c = client(url)
    prompts = [PROMPT, "Hello", "abc def"]
    batch = c.completions.create(prompt=prompts, **GREEDY)
    singles = [c.completions.create(prompt=p, **GREEDY) for p in prompts]
    assert [ch.index for ch in batch.choices] == [0, 1, 2]
    assert [ch.text for ch in batch.choices] == [s.choices[0].text for s in singles]
    assert batch.usage.prompt_tokens == sum(s.usage.prompt_tokens for s in singles)
    assert batch.usage.completion_tokens == sum(s.usage.completion_tokens for s in singles)


def test_token_id_prompts_equal_their_text(url, tiny):
    ids = tiny.tokenizer(PROMPT).input_ids
    c = client(url)
    by_text = c.completions.create(prompt=PROMPT, **GREEDY)
    by_ids = c.completions.create(prompt=ids, **GREEDY)
    two = c.completions.create(prompt=[ids, ids[:3]], **GREEDY)
    assert by_ids.choices[0].text == by_text.choices[0].text == two.choices[0].text
    assert len(two.choices) == 2 and two.choices[1].index == 1


def test_n_choices_are_indexed_and_greedy_ones_identical(url):
    c = client(url)
    greedy = c.completions.create(prompt=PROMPT, n=3, **GREEDY)
    assert [ch.index for ch in greedy.choices] == [0, 1, 2]
    assert len({ch.text for ch in greedy.choices}) == 1
    sampled = c.completions.create(prompt=[PROMPT, "Hi"], n=2, model="tiny", max_tokens=12, temperature=1.0, seed=3)
    again = c.completions.create(prompt=[PROMPT, "Hi"], n=2, model="tiny", max_tokens=12, temperature=1.0, seed=3)
    assert [ch.text for ch in sampled.choices] == [ch.text for ch in again.choices]
    assert sampled.choices[0].text != sampled.choices[1].text  # choice i samples with seed + i
    assert sampled.usage.prompt_tokens == greedy.usage.prompt_tokens + 2  # once per prompt, "Hi" is 2


def test_echo_with_logprobs_scores_the_prompt_as_our_loglikelihood(url, tiny):
    ids = tiny.tokenizer(PROMPT).input_ids
    out = client(url).completions.create(model="tiny", prompt=PROMPT, echo=True, logprobs=2, max_tokens=0)
    choice = out.choices[0]
    assert choice.text == PROMPT and out.usage.completion_tokens == 0
    lp = choice.logprobs
    assert len(lp.tokens) == len(ids) and lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    ours = score_continuations(tiny.model, [(ids[:1], ids[1:])])[0].logprob
    assert sum(lp.token_logprobs[1:]) == pytest.approx(ours, abs=1e-4)
    assert lp.token_logprobs[1:] == pytest.approx(model_logprobs(tiny, ids).tolist(), abs=1e-4)
    assert "".join(lp.tokens) == PROMPT and lp.text_offset[1] == len(lp.tokens[0])


def test_chat_top_logprobs_are_the_models(url, tiny):
    messages = [{"role": "user", "content": "hello there"}]
    out = client(url).chat.completions.create(model="tiny", messages=messages, temperature=0, max_tokens=10,
                                              logprobs=True, top_logprobs=5)
    content = out.choices[0].logprobs.content
    assert len(content) == out.usage.completion_tokens
    prompt_ids = tiny.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tiny.tokenizer(prompt_ids, add_special_tokens=False).input_ids
    generated = [tiny.tokenizer.convert_tokens_to_ids(t.token) for t in content]
    want = model_logprobs(tiny, prompt_ids + generated)[len(prompt_ids) - 1 :]
    for token, expected in zip(content, want.tolist()):
        assert len(token.top_logprobs) == 5
        assert sum(math.exp(t.logprob) for t in token.top_logprobs) <= 1 + 1e-6
        assert token.logprob == pytest.approx(expected, abs=1e-4)
        assert token.logprob == pytest.approx(token.top_logprobs[0].logprob, abs=1e-6)  # greedy: the argmax


def test_streamed_logprobs_equal_the_whole_ones(url):
    c = client(url)
    body = {"prompt": PROMPT, "logprobs": 3, "echo": True} | GREEDY
    whole = c.completions.create(**body).choices[0]
    chunks = [ch.choices[0] for ch in c.completions.create(stream=True, **body) if ch.choices]
    assert "".join(ch.text for ch in chunks) == whole.text
    tokens = [t for ch in chunks if ch.logprobs for t in ch.logprobs.tokens]
    values = [v for ch in chunks if ch.logprobs for v in ch.logprobs.token_logprobs]
    assert tokens == whole.logprobs.tokens
    assert values[0] is None and values[1:] == pytest.approx(whole.logprobs.token_logprobs[1:], abs=1e-4)


def test_a_large_negative_bias_removes_a_token(url, tiny):
    c = client(url)
    text = c.completions.create(prompt=PROMPT, **GREEDY).choices[0].text
    common, _ = Counter(text).most_common(1)[0]
    (token_id,) = tiny.tokenizer(common, add_special_tokens=False).input_ids
    biased = c.completions.create(prompt=PROMPT, logit_bias={str(token_id): -100}, **GREEDY).choices[0].text
    assert common not in biased and biased


def test_penalties_change_a_repetitive_answer(url):
    c = client(url)
    plain = c.completions.create(prompt=PROMPT, **(GREEDY | {"max_tokens": 40})).choices[0].text
    penalised = c.completions.create(prompt=PROMPT, frequency_penalty=2, presence_penalty=2,
                                     **(GREEDY | {"max_tokens": 40})).choices[0].text
    assert max(Counter(penalised).values()) < max(Counter(plain).values())


def test_tokenize_and_detokenize(url, tiny):
    ids = post(url, "tokenize", {"prompt": PROMPT}).json()
    assert ids["tokens"] == tiny.tokenizer(PROMPT).input_ids and ids["count"] == len(ids["tokens"])
    assert ids["max_model_len"] == tiny.config.max_seq_len
    assert post(url, "detokenize", {"tokens": ids["tokens"]}).json() == {"prompt": PROMPT}
    messages = [{"role": "user", "content": "hello"}]
    chat = client(url).chat.completions.create(model="tiny", messages=messages, max_tokens=1)
    assert post(url, "tokenize", {"messages": messages}).json()["count"] == chat.usage.prompt_tokens
    info = httpx.get(f"{url}/tokenizer_info").json()
    assert info["eos_token"] == "</s>" and info["chat_template"]


BAD = [
    ("v1/completions", {"prompt": "hi", "best_of": 3}, "best_of"),
    ("v1/completions", {"prompt": "hi", "suffix": "after"}, "suffix"),
    ("v1/completions", {"prompt": "hi", "max_tokens": 0}, "max_tokens"),
    ("v1/completions", {"prompt": [1, 2, 100000]}, "prompt"),
    ("v1/completions", {"prompt": [[1, 2], []]}, "prompt"),
    ("v1/completions", {"prompt": "hi", "logprobs": 21}, "logprobs"),
    ("v1/completions", {"prompt": "hi", "logit_bias": {"100000": 1}}, "logit_bias"),
    ("v1/completions", {"prompt": "hi", "logit_bias": {"a": 1}}, "logit_bias"),
    ("v1/completions", {"prompt": "hi", "logit_bias": {"\u00b2": 1}}, "logit_bias"),
    ("v1/completions", {"prompt": "hi", "logit_bias": {"5": 101}}, "logit_bias"),
    ("v1/completions", {"prompt": "hi", "frequency_penalty": 2.5}, "frequency_penalty"),
    ("v1/completions", {"prompt": ["a"] * 9, "n": 2}, "n"),
    ("v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}, "top_logprobs"),
    ("v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
     "tools"),
    ("v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "store": 0}, "store"),
    ("v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "reasoning_effort": "low"},
     "reasoning_effort"),
    ("tokenize", {}, "prompt"),
    ("detokenize", {"tokens": [100000]}, "tokens"),
]


@pytest.mark.parametrize(("endpoint", "body", "param"), BAD)
def test_fields_we_cannot_honour_are_400s_naming_them(url, endpoint, body, param):
    body = body if endpoint.startswith("tokenize") or endpoint.startswith("detok") else {"model": "tiny"} | body
    r = httpx.post(f"{url}/{endpoint}", content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"].split(".")[0] == param
