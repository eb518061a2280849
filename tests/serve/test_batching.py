"""Continuous batching in the server: concurrent requests share one batch and each gets exactly what
it would get alone; rows join and leave between rounds; 503 only when the batch and the queue are full.

Overlap is made certain, not left to timing: the worker is held (a blocking item, or a gate on the
rounds) while requests queue, so they join the same batch when it is let go.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from layerskip.cli import build_parser
from layerskip.commands.serve import server_config
from layerskip.errors import LayerSkipError
from layerskip.generation.config import GenerationConfig
from layerskip.generation.generate import generate, generate_ids
from layerskip.model.loading import load_model
from layerskip.serve.app import create_app
from layerskip.serve.background import serving
from layerskip.serve.config import ServerConfig
from layerskip.serve.engine import Engine, Event, Job, Task
from layerskip.serve.metrics import Metrics
from layerskip.serve.worker import Worker

PROMPTS = ["The quick brown fox", "Hi", "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,", "Once upon a time, far away", "ab"]
LIMITS = {"max_tokens": 64, "max_prompt_tokens": 100}


@pytest.fixture
def own_tiny(tiny_dir):
    return load_model(str(tiny_dir))


def _hold(worker: Worker) -> threading.Event:
    """Occupy the worker thread until the returned event is set."""
    release = threading.Event()
    worker.submit(lambda: release.wait(30))
    _wait_for(lambda: worker.depth == 0)
    return release


def _wait_for(condition, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def _batched_at_once(server, bodies: list[dict], url: str) -> list[httpx.Response]:
    """Queue every request while the worker is held, then let them all join one batch."""
    release = _hold(server.worker)
    with ThreadPoolExecutor(len(bodies)) as pool:
        futures = [pool.submit(httpx.post, f"{url}/v1/completions", json=b, timeout=60) for b in bodies]
        _wait_for(lambda: server.worker.depth == len(bodies))
        release.set()
        return [f.result() for f in futures]


@pytest.mark.parametrize("strategy", ["autoregressive", "self_speculative"])
def test_concurrent_greedy_requests_each_equal_generate_ids(own_tiny, strategy):
    mixed = [(p, n) for p, n in zip(PROMPTS, [40, 7, 64, 1, 25], strict=True)]
    extra = {"strategy": strategy, "exit_layer": 2, "num_speculations": 3} if strategy != "autoregressive" else {}
    refs = [generate_ids(own_tiny, own_tiny.tokenizer(p).input_ids,
                         GenerationConfig(max_new_tokens=n)).text for p, n in mixed]
    app = create_app(own_tiny, ServerConfig(max_batch_size=4, max_queue=8, **LIMITS))
    server = app.state.server
    with serving(app) as url:
        bodies = [{"model": own_tiny.name, "prompt": p, "max_tokens": n, "temperature": 0} | extra
                  for p, n in mixed]
        out = _batched_at_once(server, bodies, url)
    assert [r.json()["choices"][0]["text"] for r in out] == refs
    m = server.metrics
    assert m.row_rounds._value.get() > m.rounds._value.get()  # the rows really decoded together


def test_a_request_of_another_strategy_waits_for_the_batch_to_drain(own_tiny):
    cfg = GenerationConfig(max_new_tokens=30)
    ids = [own_tiny.tokenizer(p).input_ids for p in PROMPTS[:3]]
    refs = [generate_ids(own_tiny, i, cfg).text for i in ids]
    app = create_app(own_tiny, ServerConfig(max_batch_size=4, **LIMITS))
    with serving(app) as url:
        spec = {"strategy": "self_speculative", "exit_layer": 1, "num_speculations": 4}
        bodies = [{"model": own_tiny.name, "prompt": ids[i], "max_tokens": 30, "temperature": 0}
                  | (spec if i == 1 else {}) for i in range(3)]
        out = _batched_at_once(app.state.server, bodies, url)
    assert [r.json()["choices"][0]["text"] for r in out] == refs
    assert out[1].json()["usage"]["speculation"]["strategy"] == "self_speculative"


def test_openai_client_concurrent_temperatures_and_stop_strings(own_tiny):
    """Greedy and seeded sampled requests, streamed and not, with their own stop strings, in one
    batch: each equals what it gets served alone."""
    requests = [
        dict(prompt=PROMPTS[0], temperature=0, stop=["e"], stream=False),
        dict(prompt=PROMPTS[1], temperature=0, stop=None, stream=True),
        dict(prompt=PROMPTS[2], temperature=0.9, seed=3, stop=[", 9"], stream=True),
        dict(prompt=PROMPTS[3], temperature=1.3, seed=5, top_p=0.9, stop=None, stream=False),
    ]
    app = create_app(own_tiny, ServerConfig(max_batch_size=4, **LIMITS))
    server = app.state.server
    with serving(app) as url:
        api = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=60)

        def complete(kw: dict) -> str:
            out = api.completions.create(model=own_tiny.name, max_tokens=30, **kw)
            if kw["stream"]:
                return "".join(chunk.choices[0].text for chunk in out if chunk.choices)
            return out.choices[0].text

        alone = [complete(kw) for kw in requests]
        release = _hold(server.worker)
        with ThreadPoolExecutor(len(requests)) as pool:
            futures = [pool.submit(complete, kw) for kw in requests]
            _wait_for(lambda: server.worker.depth == len(requests))
            release.set()
            together = [f.result() for f in futures]
    assert together == alone
    greedy = generate(own_tiny, PROMPTS[0], GenerationConfig(max_new_tokens=30, stop_strings=["e"]))
    assert together[0] == greedy.text and "e" not in together[0]
    assert server.metrics.row_rounds._value.get() > server.metrics.rounds._value.get()


def test_503_only_when_the_batch_and_the_queue_are_full(own_tiny):
    app = create_app(own_tiny, ServerConfig(max_batch_size=2, max_queue=2, retry_after_s=2, **LIMITS))
    server = app.state.server
    with serving(app) as url:
        gate, engine = threading.Event(), server.engine
        step = engine.step

        def gated_step() -> None:
            """No round runs until the gate opens (joins still do), so the rows stay taken."""
            if gate.wait(0.001):
                step()

        engine.step = gated_step
        body = {"model": own_tiny.name, "prompt": PROMPTS[0], "max_tokens": 20}
        with ThreadPoolExecutor(4) as pool:
            post = lambda: httpx.post(f"{url}/v1/completions", json=body, timeout=60)  # noqa: E731
            futures = [pool.submit(post)]
            _wait_for(lambda: engine.rows == 1)  # the batch has room: joined, not refused
            futures.append(pool.submit(post))
            _wait_for(lambda: engine.rows == 2)
            futures += [pool.submit(post), pool.submit(post)]  # the batch is full: they queue
            _wait_for(lambda: server.worker.depth == 2)
            refused = httpx.post(f"{url}/v1/completions", json=body)
            gate.set()
            served = [f.result() for f in futures]
    assert refused.status_code == 503 and refused.headers["retry-after"] == "2"
    assert [r.status_code for r in served] == [200] * 4


def _events(loop: asyncio.AbstractEventLoop, job: Job) -> list[Event]:
    loop.run_until_complete(asyncio.sleep(0))  # deliver what the worker posted
    out = []
    while not job.events.empty():
        out.append(job.events.get_nowait())
    return out


def test_rows_leave_on_disconnect_and_new_ones_join_mid_flight(own_tiny):
    """The engine driven round by round: a cancelled row is freed at the next round, a new request
    takes it, and no row's tokens change."""
    loop = asyncio.new_event_loop()
    engine = Engine(own_tiny, Worker(4), Metrics(lambda: 0), max_batch_size=2, max_seq_len=200)
    cfg = GenerationConfig(max_new_tokens=24, ignore_eos=True)
    ids = [own_tiny.tokenizer(p).input_ids for p in PROMPTS[:3]]
    refs = [generate_ids(own_tiny, i, cfg).token_ids for i in ids]
    jobs = [Job([Task(0, 0, i, cfg)], stream=True, timeout_s=60, loop=loop) for i in ids]
    engine._admit(jobs[0])
    engine._admit(jobs[1])
    for _ in range(3):
        engine.step()
    assert engine.rows == 2 and not engine.has_room()
    jobs[1].cancelled.set()  # its client went away
    engine.step()
    assert engine.rows == 1 and engine.decoder.free == 1
    engine._admit(jobs[2])  # joins the freed row while job 0 is mid-flight
    while engine.busy():
        engine.step()
    events = [_events(loop, j) for j in jobs]
    assert events[1][-1].error is not None and events[1][-1].error.status == 499
    done = [e[-1].done for e in (events[0], events[2])]
    assert [d.result.token_ids for d in done] == [refs[0], refs[2]]
    assert "".join(e.text for e in events[0][:-1]) == done[0].result.text  # streamed as committed
    assert engine.metrics.stopped.labels("cancelled")._value.get() == 1
    loop.close()


def test_batch_size_flag_and_cache_length():
    cfg = server_config(build_parser("serve").parse_args(["serve", "--max-batch-size", "3", "--max-prompt-tokens",
                                                         "100", "--max-tokens-limit", "50"]))
    assert cfg.max_batch_size == 3 and cfg.cache_length(8192) == 151 and cfg.cache_length(120) == 120
    with pytest.raises(LayerSkipError, match="max_batch_size"):
        ServerConfig(max_batch_size=0)
