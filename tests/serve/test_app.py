"""The server through the official openai client and raw HTTP, on the tiny model (and SmolLM2 once)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from layerskip.cli import main
from layerskip.generation.config import GenerationConfig
from layerskip.generation.generate import generate
from layerskip.model.loaded import LoadedModel
from layerskip.model.loading import load_model
from layerskip.serve.app import create_app
from layerskip.serve.background import serving
from layerskip.serve.config import ServerConfig

API_KEY = "test-key"
PROMPT = "The quick brown fox"
GREEDY = {"temperature": 0, "max_tokens": 40}


@pytest.fixture(scope="module")
def tiny_url(tiny: LoadedModel) -> Iterator[str]:
    """The tiny model served with an API key, tiny limits and the default (greedy) settings."""
    cfg = ServerConfig(api_key=API_KEY, served_model_name="tiny", max_tokens=64, max_prompt_tokens=200,
                       max_body_bytes=4096)
    with serving(create_app(tiny, cfg)) as url:
        yield url


@pytest.fixture
def own_tiny(tiny_dir) -> LoadedModel:
    """A private copy of the tiny model, for servers that run beside the shared one."""
    return load_model(str(tiny_dir))


def client(url: str, key: str | None = API_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key or "none", max_retries=0, timeout=30)


def expected(loaded, prompt, chat=False, **kw) -> object:
    return generate(loaded, prompt, GenerationConfig(max_new_tokens=40, chat=chat, **kw))


def test_models_lists_the_served_name(tiny_url):
    models = client(tiny_url).models.list()
    assert [m.id for m in models.data] == ["tiny"]


def test_completion_equals_generate(tiny_url, tiny):
    out = client(tiny_url).completions.create(model="tiny", prompt=PROMPT, **GREEDY)
    ref = expected(tiny, PROMPT)
    assert out.choices[0].text == ref.text
    assert out.choices[0].finish_reason == ref.finish_reason
    assert out.usage.prompt_tokens == ref.prompt_tokens
    assert out.usage.completion_tokens == ref.num_new_tokens


def test_completion_stream_equals_non_stream(tiny_url):
    c = client(tiny_url)
    whole = c.completions.create(model="tiny", prompt=PROMPT, **GREEDY)
    chunks = list(c.completions.create(model="tiny", prompt=PROMPT, stream=True,
                                       stream_options={"include_usage": True}, **GREEDY))
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == whole.choices[0].text
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_chat_equals_generate_stream_and_not(tiny_url, tiny):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    c = client(tiny_url)
    ref = expected(tiny, messages, chat=True)
    out = c.chat.completions.create(model="tiny", messages=messages, **GREEDY)
    assert out.choices[0].message.content == ref.text and out.choices[0].message.role == "assistant"
    chunks = list(c.chat.completions.create(model="tiny", messages=messages, stream=True, **GREEDY))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == ref.text
    assert chunks[-1].choices[0].finish_reason == ref.finish_reason


def test_max_completion_tokens_bounds_a_chat(tiny_url):
    messages = [{"role": "user", "content": "hello"}]
    out = client(tiny_url).chat.completions.create(model="tiny", messages=messages, max_completion_tokens=3,
                                                   max_tokens=30, temperature=0, extra_body={"stop": None})
    assert out.usage.completion_tokens <= 3


def test_self_speculative_via_extra_body_is_lossless_and_reports_usage(tiny_url, tiny):
    extra = {"strategy": "self_speculative", "exit_layer": 2, "num_speculations": 3}
    out = client(tiny_url).completions.create(model="tiny", prompt=PROMPT, extra_body=extra, **GREEDY)
    assert out.choices[0].text == expected(tiny, PROMPT).text  # greedy self-speculation == autoregressive
    spec = out.usage.model_extra["speculation"]
    assert spec["strategy"] == "self_speculative" and spec["exit_layer"] == 2 and spec["num_speculations"] == 3
    assert spec["drafted_tokens"] > 0 and 0 <= spec["accepted_tokens"] <= spec["drafted_tokens"]
    assert spec["acceptance_rate"] == pytest.approx(spec["accepted_tokens"] / spec["drafted_tokens"])


def test_greedy_output_equals_layerskip_generate(tiny_url, tiny_dir, capsys):
    assert main(["generate", "--model", str(tiny_dir), "--prompt", PROMPT, "--max-new-tokens", "40",
                 "--strategy", "self_speculative", "--exit-layer", "1", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    out = client(tiny_url).completions.create(model="tiny", prompt=PROMPT, **GREEDY,
                                              extra_body={"strategy": "self_speculative", "exit_layer": 1})
    assert out.choices[0].text == cli["text"]
    assert out.usage.completion_tokens == cli["num_new_tokens"]


def test_stop_string_is_cut_the_same_streamed_or_not(tiny_url):
    c = client(tiny_url)
    text = c.completions.create(model="tiny", prompt=PROMPT, **GREEDY).choices[0].text
    assert len(text) > 6, "the tiny model's greedy output is too short for this test"
    stop = text[4:6]
    want = text[: text.index(stop)]
    whole = c.completions.create(model="tiny", prompt=PROMPT, stop=[stop], **GREEDY)
    streamed = "".join(ch.choices[0].text for ch in c.completions.create(
        model="tiny", prompt=PROMPT, stop=stop, stream=True, **GREEDY))
    assert whole.choices[0].text == streamed == want
    assert whole.choices[0].finish_reason == "stop"


def test_sampling_with_a_seed_is_reproducible(tiny_url):
    c = client(tiny_url)
    runs = [c.completions.create(model="tiny", prompt=PROMPT, max_tokens=20, temperature=1.0, top_p=0.9, seed=7,
                                 extra_body={"top_k": 20}).choices[0].text for _ in range(2)]
    assert runs[0] == runs[1]


def test_api_key_is_required(tiny_url):
    with pytest.raises(openai.AuthenticationError) as e:
        client(tiny_url, key="wrong").models.list()
    assert e.value.body["code"] == "invalid_api_key"
    r = httpx.post(f"{tiny_url}/v1/completions", json={"model": "tiny", "prompt": "x"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{tiny_url}/metrics").status_code == 401
    assert httpx.get(f"{tiny_url}/health").json()["status"] == "ok"  # probes need no key


HUGE = "x" * 5000  # over the 4096-byte body limit
LONG = "x" * 300  # under the body limit, over the 200-token prompt limit
BAD_REQUESTS = [
    ("completions", b'{"model": "tiny", "prompt": ', 400, None),
    ("completions", b"", 400, None),
    ("completions", {"model": "tiny", "prompt": "hi", "max_tokens": "ten"}, 400, "max_tokens"),
    ("completions", {"model": "tiny", "prompt": "hi", "max_tokens": -1}, 400, "max_tokens"),
    ("completions", {"model": "tiny", "prompt": "hi", "max_tokens": 0}, 400, "max_tokens"),
    ("completions", {"model": "tiny", "prompt": "hi", "max_tokens": 1000}, 400, "max_tokens"),
    ("completions", {"model": "tiny", "prompt": "hi", "temperature": 2.5}, 400, "temperature"),
    ("completions", {"model": "tiny", "prompt": "hi", "temperature": "hot"}, 400, "temperature"),
    ("completions", {"model": "tiny", "prompt": "hi", "top_p": 0}, 400, "top_p"),
    ("completions", {"model": "tiny", "prompt": "hi", "n": 17}, 400, "n"),
    ("completions", {"model": "tiny", "prompt": "hi", "stream": "yes"}, 400, "stream"),
    ("completions", {"model": "tiny", "prompt": "hi", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ("completions", {"model": "tiny", "prompt": "hi", "best_of": 3}, 400, "best_of"),
    ("completions", {"model": "tiny", "prompt": ["a", 42]}, 400, "prompt"),
    ("completions", {"model": "tiny", "prompt": []}, 400, "prompt"),
    ("completions", {"model": "tiny", "prompt": 42}, 400, "prompt"),
    ("completions", {"model": "tiny", "prompt": "   "}, 400, "prompt"),
    ("completions", b'{"model": "tiny", "prompt": "a\\udbe3b"}', 400, "prompt"),
    ("completions", {"model": "tiny"}, 400, "prompt"),
    ("completions", {"model": "gpt-4", "prompt": "hi"}, 404, "model"),
    ("completions", {"model": "tiny", "prompt": HUGE}, 413, None),
    ("completions", {"model": "tiny", "prompt": LONG}, 400, "prompt"),
    ("completions", {"model": "tiny", "prompt": "hi", "strategy": "magic"}, 400, "strategy"),
    ("completions", {"model": "tiny", "prompt": "hi", "strategy": "self_speculative", "exit_layer": 4}, 400,
     "exit_layer"),
    ("completions", {"model": "tiny", "prompt": "hi", "num_speculations": 0}, 400, "num_speculations"),
    ("completions", {"model": "tiny", "prompt": "hi", "seed": "7"}, 400, "seed"),
    ("completions", {"model": "tiny", "prompt": "hi", "max_tokens": 2.5}, 400, "max_tokens"),
    ("chat/completions", {"model": "tiny", "messages": []}, 400, "messages"),
    ("chat/completions", {"model": "tiny", "messages": [{"role": "robot", "content": "hi"}]}, 400, "messages"),
    ("chat/completions", {"model": "tiny", "messages": "hi"}, 400, "messages"),
    ("chat/completions", b'{"model": "tiny", "messages": [{"role": "user", "content": "\\ud800"}]}', 400, "messages"),
    ("chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": LONG}]}, 400, "messages"),
    ("chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                          "max_completion_tokens": -5}, 400, "max_completion_tokens"),
]


@pytest.mark.parametrize(("endpoint", "body", "status", "param"), BAD_REQUESTS)
def test_malformed_input_gets_a_4xx_openai_error(tiny_url, endpoint, body, status, param):
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(f"{tiny_url}/v1/{endpoint}", content=content, headers=headers)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert "Traceback" not in r.text
    if param is not None:
        assert error["param"].split(".")[0] == param


def test_unknown_route_and_method_get_error_objects(tiny_url):
    r = httpx.get(f"{tiny_url}/v2/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = httpx.delete(f"{tiny_url}/health")
    assert r.status_code == 405 and "error" in r.json()


def test_metrics_count_requests_tokens_and_drafts(tiny_url):
    c = client(tiny_url)
    # a fixed exit layer: with `auto` the controller may rightly decode the tiny model autoregressively
    c.completions.create(model="tiny", prompt=PROMPT, **GREEDY, extra_body={"strategy": "self_speculative",
                                                                             "exit_layer": 2})
    text = httpx.get(f"{tiny_url}/metrics", headers={"Authorization": f"Bearer {API_KEY}"}).text
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
              for line in text.splitlines() if line and not line.startswith("#")}
    assert values['layerskip_requests_total{endpoint="/v1/completions",status="200"}'] >= 1
    assert values["layerskip_generated_tokens_total"] > 0 and values["layerskip_drafted_tokens_total"] > 0
    assert values["layerskip_accepted_tokens_total"] <= values["layerskip_drafted_tokens_total"]
    assert values["layerskip_queue_depth"] == 0
    assert values["layerskip_acceptance_rate_count"] >= 1
    assert "layerskip_request_duration_seconds_bucket" in text and "layerskip_time_to_first_token_seconds" in text


def test_openapi_spec_promises_the_real_error_codes(tiny_url):
    spec = httpx.get(f"{tiny_url}/openapi.json").json()
    op = spec["paths"]["/v1/completions"]["post"]
    assert "422" not in op["responses"] and {"400", "401", "404", "413", "503"} <= set(op["responses"])
    assert "text/event-stream" in op["responses"]["200"]["content"]


def _block(worker) -> threading.Event:
    """Occupy the worker until the returned event is set."""
    release = threading.Event()
    worker.submit(lambda: release.wait(30))
    while worker.depth:  # until the blocker runs
        time.sleep(0.01)
    return release


def _wait_for(condition, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_full_queue_answers_503_with_retry_after(own_tiny):
    """A busy worker leaves requests queued: one for the batch's row and one for the queue are
    admitted, the third is refused."""
    app = create_app(own_tiny, ServerConfig(max_batch_size=1, max_queue=1, retry_after_s=3))
    worker = app.state.server.worker
    with serving(app) as url:
        release = _block(worker)
        body = {"model": own_tiny.name, "prompt": PROMPT, "max_tokens": 5}
        first: list[httpx.Response] = []
        waiting = [threading.Thread(target=lambda: first.append(httpx.post(f"{url}/v1/completions", json=body,
                                                                            timeout=30))) for _ in range(2)]
        for i, thread in enumerate(waiting):
            thread.start()
            _wait_for(lambda i=i: worker.depth == i + 1)
        r = httpx.post(f"{url}/v1/completions", json=body)
        assert r.status_code == 503 and r.headers["retry-after"] == "3"
        assert r.json()["error"]["code"] == "overloaded"
        release.set()
        for thread in waiting:
            thread.join(30)
        assert [f.status_code for f in first] == [200, 200]  # the queued requests were served, not dropped
        assert httpx.post(f"{url}/v1/completions", json=body).status_code == 200


def test_request_timeout_answers_504(own_tiny):
    app = create_app(own_tiny, ServerConfig(timeout_s=0.3))
    with serving(app) as url:
        release = _block(app.state.server.worker)
        r = httpx.post(f"{url}/v1/completions", json={"model": own_tiny.name, "prompt": PROMPT}, timeout=30)
        release.set()
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"


def test_client_leaving_a_queued_stream_frees_its_slot(own_tiny):
    app = create_app(own_tiny, ServerConfig(max_queue=1))
    server = app.state.server
    with serving(app) as url:
        release = _block(server.worker)
        body = {"model": own_tiny.name, "prompt": PROMPT, "max_tokens": 5, "stream": True}
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=30) as r:
            assert r.status_code == 200
            _wait_for(lambda: server.worker.depth == 1)
        release.set()  # the client is gone: its job is skipped, nothing is generated for it
        _wait_for(lambda: server.worker.depth == 0)
        _wait_for(lambda: server.metrics.stopped.labels("cancelled")._value.get() == 1)
        assert server.metrics.generated_tokens._value.get() == 0


def test_health_is_503_while_loading(tiny_dir):
    go = threading.Event()

    def loader():
        go.wait(30)
        return load_model(str(tiny_dir))

    with serving(create_app(loader)) as url:
        r = httpx.get(f"{url}/health")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        r = httpx.post(f"{url}/v1/completions", json={"model": "x", "prompt": "hi"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_loading" and "retry-after" in r.headers
        go.set()
        _wait_for(lambda: httpx.get(f"{url}/health").status_code == 200)


def test_health_reports_a_failed_load(tmp_path):
    with serving(create_app(lambda: load_model(str(tmp_path)))) as url:
        _wait_for(lambda: httpx.get(f"{url}/health").json()["status"] == "failed")
        assert "config.json" in httpx.get(f"{url}/health").json()["detail"]


@pytest.mark.slow
def test_smollm2_chat_and_disconnect_mid_stream(smollm2):
    app = create_app(smollm2, ServerConfig(served_model_name="smollm2"))
    server = app.state.server
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    with serving(app) as url:
        out = client(url, key=None).chat.completions.create(model="smollm2", messages=messages, temperature=0,
                                                             max_tokens=12)
        ref = generate(smollm2, messages, GenerationConfig(max_new_tokens=12, chat=True))
        assert out.choices[0].message.content == ref.text and ref.text
        # A client that leaves mid-stream stops its generation; the next request is served.
        stream = client(url, key=None).completions.create(model="smollm2", prompt="1, 2, 3, 4,", max_tokens=400,
                                                          temperature=0, stream=True)
        assert next(iter(stream)).choices[0].text
        stream.close()
        _wait_for(lambda: server.metrics.stopped.labels("cancelled")._value.get() == 1)
        assert server.metrics.generated_tokens._value.get() == out.usage.completion_tokens  # the chat only
        again = client(url, key=None).completions.create(model="smollm2", prompt="Hi", max_tokens=2)
        assert again.usage.completion_tokens <= 2


@pytest.mark.parametrize("extra", [{"top_p": 1e-46}, {"top_p": 5e-324, "top_k": 1}, {"temperature": 1e-300}])
def test_extreme_sampling_values_are_served(tiny_url, extra):
    sampling = {"temperature": 2.0, "seed": 1} | extra
    out = client(tiny_url).completions.create(model="tiny", prompt=PROMPT, max_tokens=4, extra_body=sampling)
    assert out.usage.completion_tokens >= 1
