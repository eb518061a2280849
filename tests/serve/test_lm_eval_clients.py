"""lm-eval's own API clients against the server, offline, on the tiny model and the shipped local
tasks: `local-completions` with its default token-id requests (generation, and multiple choice
through echo + logprobs), and `local-chat-completions`. Each must give what `layerskip eval`'s
model gives on the same tasks: the same loglikelihoods (within 1e-4) and the same generations."""

from __future__ import annotations

from collections.abc import Iterator

import lm_eval
import pytest
import torch

from layerskip.eval.harness import TASKS_DIR
from layerskip.eval.lm import LayerSkipLM
from layerskip.model.loaded import LoadedModel
from layerskip.serve.app import create_app
from layerskip.serve.background import serving
from layerskip.serve.config import ServerConfig

LIMIT = 4


@pytest.fixture(scope="module")
def url(tiny: LoadedModel) -> Iterator[str]:
    with serving(create_app(tiny, ServerConfig(served_model_name="tiny", max_tokens=64))) as base:
        yield base


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OPENAI_API_KEY", "none")


def run(model, tasks: list[str], **kw) -> dict:
    from lm_eval.tasks import TaskManager

    return lm_eval.simple_evaluate(model=model, tasks=tasks, limit=LIMIT, log_samples=True,
                                   task_manager=TaskManager(include_path=[str(TASKS_DIR)], include_defaults=False),
                                   **kw)


def responses(results: dict, task: str) -> list:
    return [s["resps"] for s in sorted(results["samples"][task], key=lambda s: s["doc_id"])]


@pytest.fixture(scope="module")
def ours(tiny) -> dict:
    """`layerskip eval`'s model on the same tasks: the reference."""
    torch.set_num_threads(1)  # module fixtures start before the per-test thread setting
    return run(LayerSkipLM(pretrained=tiny), ["layerskip_mc", "layerskip_gen"])


def _same_loglikelihoods(theirs: dict, ours: dict) -> None:
    for got, want in zip(responses(theirs, "layerskip_mc"), responses(ours, "layerskip_mc"), strict=True):
        assert [r[0][0] for r in got] == pytest.approx([r[0][0] for r in want], abs=1e-4)
        assert [r[0][1] for r in got] == [r[0][1] for r in want]  # is_greedy
    assert theirs["results"]["layerskip_mc"]["acc,none"] == ours["results"]["layerskip_mc"]["acc,none"]


def test_local_completions_with_token_id_requests(url, tiny_dir, ours):
    args = {"base_url": f"{url}/v1/completions", "model": "tiny", "tokenizer": str(tiny_dir),
            "tokenizer_backend": "huggingface", "max_retries": 1}
    theirs = run("local-completions", ["layerskip_mc", "layerskip_gen"], model_args=args)
    _same_loglikelihoods(theirs, ours)
    assert responses(theirs, "layerskip_gen") == responses(ours, "layerskip_gen")


def test_local_completions_finds_our_tokenizer_endpoints(url, ours):
    """Without a tokenizer, lm-eval detects /tokenizer_info and /tokenize and uses them."""
    args = {"base_url": f"{url}/v1/completions", "model": "tiny", "max_retries": 1}
    _same_loglikelihoods(run("local-completions", ["layerskip_mc"], model_args=args), ours)


def test_local_chat_completions(url, tiny):
    args = {"base_url": f"{url}/v1/chat/completions", "model": "tiny", "max_retries": 1}
    theirs = run("local-chat-completions", ["layerskip_gen"], model_args=args, apply_chat_template=True)
    want = run(LayerSkipLM(pretrained=tiny), ["layerskip_gen"], apply_chat_template=True)
    assert responses(theirs, "layerskip_gen") == responses(want, "layerskip_gen")
