"""Fixtures of the serve tests: the tiny model served on a loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from layerskip.model.loading import LoadedModel, load_model
from layerskip.serve import ServerConfig, create_app

from .live_server import API_KEY, serving


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
