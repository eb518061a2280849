"""`layerskip serve`: the OpenAI-compatible server. The port opens at once; the model loads
behind it (/health answers 503 until it is ready)."""

from __future__ import annotations

import argparse
import os
from dataclasses import fields

from layerskip.commands.common import (
    add_generation_arguments,
    add_model_arguments,
    generation_config,
    load_from_args,
)
from layerskip.commands.extras import require_extra
from layerskip.model.loading import DEFAULT_MODEL, resolve
from layerskip.serve.config import ServerConfig

_DEFAULTS = {f.name: f.default for f in fields(ServerConfig) if not callable(f.default_factory)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    s = p.add_argument_group("server")
    s.add_argument("--host", default=_DEFAULTS["host"], help="bind address (loopback by default)")
    s.add_argument("--port", type=int, default=_DEFAULTS["port"])
    s.add_argument("--api-key", default=None, help="require `Authorization: Bearer KEY` (else env LAYERSKIP_API_KEY)")
    s.add_argument("--served-model-name", default=None, help="the model name clients send (default: --model)")
    s.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    lim = p.add_argument_group("limits")
    lim.add_argument("--max-batch-size", type=int, default=_DEFAULTS["max_batch_size"],
                     help="requests decoded together (continuous batching)")
    lim.add_argument("--max-queue", type=int, default=_DEFAULTS["max_queue"],
                     help="requests waiting for a row of the batch; more get 503 + Retry-After")
    lim.add_argument("--timeout", type=float, default=_DEFAULTS["timeout_s"],
                     help="seconds per request, queueing included")
    lim.add_argument("--max-body-bytes", type=int, default=_DEFAULTS["max_body_bytes"])
    lim.add_argument("--max-prompt-tokens", type=int, default=_DEFAULTS["max_prompt_tokens"],
                     help="with --max-tokens-limit it sizes the batch's cache (0: the model's context)")
    lim.add_argument("--max-tokens-limit", type=int, default=_DEFAULTS["max_tokens"],
                     help="the largest max_tokens a request may ask for")
    add_generation_arguments(p)  # defaults for what a request leaves out


def server_config(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        host=args.host,
        port=args.port,
        api_key=args.api_key or os.environ.get("LAYERSKIP_API_KEY"),
        served_model_name=args.served_model_name or args.model or DEFAULT_MODEL,
        generation=generation_config(args),
        max_batch_size=args.max_batch_size,
        max_queue=args.max_queue,
        timeout_s=args.timeout,
        max_body_bytes=args.max_body_bytes,
        max_prompt_tokens=args.max_prompt_tokens or None,
        max_tokens=args.max_tokens_limit,
    )


def run(args: argparse.Namespace) -> int:
    require_extra("serve")
    import uvicorn

    from layerskip.serve.app import create_app

    cfg = server_config(args)  # validate flags and the model path before opening the port
    resolve(args.model)
    if cfg.host not in ("127.0.0.1", "localhost", "::1") and cfg.api_key is None:
        print(f"warning: serving on {cfg.host} without --api-key: anyone who can reach it can use it")
    app = create_app(lambda: load_from_args(args), cfg)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=args.log_level, timeout_graceful_shutdown=5)
    return 0
