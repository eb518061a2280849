"""The FastAPI app: OpenAI-compatible completions and chat over one model, its requests decoded in
one continuously batched loop behind a bounded queue.

    app = create_app(load_model(), ServerConfig(api_key="..."))   # or a loader: create_app(load_model)
"""

from __future__ import annotations

import asyncio
import copy
import logging
import secrets
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from jinja2 import TemplateError
from prometheus_client import CONTENT_TYPE_LATEST

from layerskip import __version__
from layerskip.errors import LayerSkipError
from layerskip.generation.generate import Prompt, encode_prompt
from layerskip.model.loaded import LoadedModel
from layerskip.serve.config import ServerConfig
from layerskip.serve.engine import Completed, Engine, Job, Task
from layerskip.serve.errors import APIError, install_error_handlers, unavailable
from layerskip.serve.limits import BodyLimit, max_new_tokens
from layerskip.serve.metrics import Metrics, RequestMetrics
from layerskip.serve.protocol import Logprobs, Reply, generation_config, sse_stream
from layerskip.serve.schemas import (
    MAX_CHOICES,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    DetokenizeRequest,
    DetokenizeResponse,
    ErrorResponse,
    GenerationRequest,
    Health,
    ModelCard,
    ModelList,
    TokenizeRequest,
    TokenizeResponse,
    TokenizerInfo,
)
from layerskip.serve.worker import QueueFull, Worker

log = logging.getLogger("layerskip.serve")

Loader = Callable[[], LoadedModel]


class Server:
    """What the routes share: settings, the worker, metrics and, once loaded, the engine."""

    def __init__(self, cfg: ServerConfig):
        self.cfg = cfg
        self.worker = Worker(cfg.max_queue + cfg.max_batch_size)  # the engine refuses what the batch can't take
        self.metrics = Metrics(lambda: self.worker.depth, lambda: self.engine.rows if self.engine else 0)
        self.engine: Engine | None = None
        self.load_error: str | None = None
        self.tokenizer: Any = None  # a copy for the event loop; the worker thread uses the model's own
        self.model_name = cfg.served_model_name or ""  # the loaded model's name if not set
        self.created = int(time.time())

    def set_model(self, loaded: LoadedModel) -> None:
        self.tokenizer = copy.deepcopy(loaded.tokenizer)
        self.model_name = self.cfg.served_model_name or loaded.name
        self.engine = Engine(loaded, self.worker, self.metrics, self.cfg.max_batch_size,
                             self.cfg.cache_length(loaded.config.max_seq_len), self.cfg.max_queue)
        self.worker.rounds = self.engine

    def reply(self, chat: bool) -> Reply:
        return Reply(self.model_name, chat, Logprobs(self.tokenizer))

    def load(self, loader: Loader) -> None:
        try:
            self.set_model(loader())
        except Exception as e:  # reported by /health; LayerSkipError messages are meant for users
            log.exception("model failed to load")
            self.load_error = str(e) if isinstance(e, LayerSkipError) else f"{type(e).__name__}: {e}"

    def ready(self) -> Engine:
        if self.engine is not None:
            return self.engine
        if self.load_error is not None:
            raise APIError(503, f"the model failed to load: {self.load_error}", "server_error", code="load_failed")
        raise unavailable("the model is still loading", self.cfg.retry_after_s, code="model_loading")

    def start(self, req: GenerationRequest, prompts: list[Prompt] | list[list[int]], chat: bool,
              echo: bool = False) -> Job:
        """Validate a request against the model and the limits, and queue its choices: n per
        prompt, each a row of the batch."""
        engine = self.ready()
        self.check_model(req.model)
        param = "messages" if chat else "prompt"
        mcfg = engine.loaded.config
        if len(prompts) * req.n > MAX_CHOICES:
            raise APIError(400, f"{len(prompts)} prompts x n={req.n} choices exceed the limit of {MAX_CHOICES}",
                           param="n")
        if req.requested_max_tokens == 0 and not echo:
            raise APIError(400, "max_tokens 0 only scores the prompt: it needs echo: true", param="max_tokens")
        self.check_ids([int(i) for i in req.logit_bias or {}], "logit_bias")
        tasks: list[Task] = []
        for p, prompt in enumerate(prompts):
            ids = self.encode(prompt, chat, param)
            n_new = max_new_tokens(len(ids), req.requested_max_tokens, self.cfg, mcfg.max_seq_len, param)
            shown = (prompt if isinstance(prompt, str) else self.tokenizer.decode(ids)) if echo else None
            for j in range(req.n):
                gen = generation_config(req, self.cfg.generation, n_new, j)
                tasks.append(Task(len(tasks), p, ids, gen, n_new > 0, req.top_logprobs_n, shown))
        try:
            tasks[0].cfg.resolve_exit_layer(mcfg.n_layers, mcfg.recommended_exit_layer)
        except LayerSkipError as e:
            raise APIError(400, str(e), param="exit_layer") from e
        job = Job(tasks, req.stream, self.cfg.timeout_s, asyncio.get_running_loop())
        try:
            engine.submit(job)
        except QueueFull:
            raise unavailable("the server is busy: the request queue is full", self.cfg.retry_after_s) from None
        return job

    def check_model(self, model: str | None) -> None:
        if model is not None and model != self.model_name:
            raise APIError(404, f"model {model!r} does not exist; this server serves {self.model_name!r}",
                           param="model", code="model_not_found")

    def check_ids(self, ids: list[int], param: str) -> None:
        vocab = self.ready().loaded.config.vocab_size
        bad = [i for i in ids if not 0 <= i < vocab]
        if bad:
            raise APIError(400, f"token id {bad[0]} is outside the vocabulary (0..{vocab - 1})", param=param)

    def encode(self, prompt: Prompt | list[int], chat: bool, param: str) -> list[int]:
        """Token ids of a prompt given as text, chat messages, or ids (checked against the vocabulary)."""
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], int):
            self.check_ids(prompt, param)  # type: ignore[arg-type]
            return list(prompt)  # type: ignore[arg-type]
        texts = [prompt] if isinstance(prompt, str) else [m["content"] for m in prompt]
        if not all(_is_unicode(t) for t in texts):
            raise APIError(400, f"the {param} is not valid Unicode (it has a lone surrogate)", param=param)
        try:
            return encode_prompt(self.tokenizer, prompt, chat)
        except LayerSkipError as e:
            raise APIError(400, str(e), param=param) from e
        except (TemplateError, ValueError) as e:  # chat templates raise their own errors (e.g. on role order)
            raise APIError(400, f"cannot apply the chat template: {e}", param=param) from e


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_ERRORS = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in [(400, "Invalid request"), (401, "Missing or wrong API key"), (404, "Unknown model"),
                         (413, "Request body too large"), (503, "Queue full or model loading (see Retry-After)"),
                         (504, "Request timed out")]
}
_STREAMED = {200: {"content": {"text/event-stream": {}}, "description": "JSON, or server-sent events if stream"}}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: _ERRORS[s] for s in statuses}


_BEARER = HTTPBearer(auto_error=False)


def _api_key_check(api_key: str) -> Callable[..., None]:
    async def check(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]) -> None:
        if creds is None or not secrets.compare_digest(creds.credentials.encode(), api_key.encode()):
            raise APIError(401, "invalid or missing API key (send Authorization: Bearer <key>)",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    return check


async def _cancel_on_disconnect(request: Request, job: Job) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
    job.cancelled.set()


async def _results(request: Request, job: Job) -> list[Completed]:
    """The finished choices; a client that leaves meanwhile cancels them."""
    watcher = asyncio.create_task(_cancel_on_disconnect(request, job))
    try:
        return await job.results()
    finally:
        watcher.cancel()


async def _answer(request: Request, job: Job, reply: Reply, req: GenerationRequest) -> Any:
    if req.stream:
        return StreamingResponse(sse_stream(job, reply, req.include_usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return reply.response(await _results(request, job))


def _routes(server: Server) -> APIRouter:
    auth = [Depends(_api_key_check(server.cfg.api_key))] if server.cfg.api_key else []
    api = APIRouter(dependencies=auth, responses=_errors(401) if auth else None)

    @api.get("/v1/models", response_model=ModelList, responses=_errors(503))
    async def models() -> ModelList:
        engine = server.ready()
        card = ModelCard(id=server.model_name, created=server.created, max_model_len=engine.loaded.config.max_seq_len)
        return ModelList(data=[card])

    @api.post("/v1/completions", response_model=CompletionResponse,
              responses=_STREAMED | _errors(400, 404, 413, 503, 504))
    async def completions(req: CompletionRequest, request: Request) -> Any:
        job = server.start(req, req.prompts, chat=False, echo=req.echo)
        return await _answer(request, job, server.reply(chat=False), req)

    @api.post("/v1/chat/completions", response_model=ChatCompletionResponse,
              responses=_STREAMED | _errors(400, 404, 413, 503, 504))
    async def chat_completions(req: ChatCompletionRequest, request: Request) -> Any:
        messages = [m.as_template_input() for m in req.messages]
        job = server.start(req, [messages], chat=True)
        return await _answer(request, job, server.reply(chat=True), req)

    @api.post("/tokenize", response_model=TokenizeResponse, responses=_errors(400, 404, 413, 503))
    async def tokenize(req: TokenizeRequest) -> TokenizeResponse:
        """Token ids of a prompt (optionally without special tokens), or of chat messages as
        /v1/chat/completions renders them."""
        engine = server.ready()
        server.check_model(req.model)
        if (req.prompt is None) == (req.messages is None):
            raise APIError(400, "give either prompt or messages", param="prompt")
        if req.prompt is not None:
            if not _is_unicode(req.prompt):
                raise APIError(400, "the prompt is not valid Unicode (it has a lone surrogate)", param="prompt")
            ids = server.tokenizer(req.prompt, add_special_tokens=req.add_special_tokens).input_ids
        else:
            ids = server.encode([m.as_template_input() for m in req.messages], True, "messages")
        return TokenizeResponse(count=len(ids), max_model_len=engine.loaded.config.max_seq_len, tokens=ids)

    @api.post("/detokenize", response_model=DetokenizeResponse, responses=_errors(400, 404, 413, 503))
    async def detokenize(req: DetokenizeRequest) -> DetokenizeResponse:
        server.ready()
        server.check_model(req.model)
        server.check_ids(req.tokens, "tokens")
        return DetokenizeResponse(prompt=server.tokenizer.decode(req.tokens))

    @api.get("/tokenizer_info", response_model=TokenizerInfo, responses=_errors(503))
    async def tokenizer_info() -> TokenizerInfo:
        engine, tok = server.ready(), server.tokenizer
        return TokenizerInfo(eos_token=tok.eos_token, bos_token=tok.bos_token, pad_token=tok.pad_token,
                             chat_template=getattr(tok, "chat_template", None),
                             model_max_length=engine.loaded.config.max_seq_len)

    @api.get("/metrics", include_in_schema=False)  # for Prometheus, not for API clients
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(server.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return api


def _health_route(app: FastAPI, server: Server) -> None:
    @app.get("/health", response_model=Health, responses={503: {"model": Health, "description": "Not ready"}})
    async def health() -> Any:
        if server.engine is not None:
            return Health(status="ok")
        status = "failed" if server.load_error is not None else "loading"
        return JSONResponse(Health(status=status, detail=server.load_error).model_dump(), 503)


def _openapi(app: FastAPI, server: Server) -> None:
    """FastAPI's spec, made to match what we do: validation errors are 400s in OpenAI's shape
    (never 422), and `model` must be the served name once it is known."""
    original = app.openapi

    def build() -> dict[str, Any]:
        schema = original()
        for ops in schema["paths"].values():
            for op in ops.values():
                op["responses"].pop("422", None)
        schemas = schema.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        for name in ("CompletionRequest", "ChatCompletionRequest"):
            if server.model_name and name in schemas:
                schemas[name]["properties"]["model"]["enum"] = [server.model_name]
        return schema

    app.openapi = build  # type: ignore[method-assign]


def create_app(model: LoadedModel | Loader, cfg: ServerConfig | None = None) -> FastAPI:
    """An app serving `model`; given a loader instead, it loads on the worker at startup and
    /health answers 503 until then."""
    cfg = cfg or ServerConfig()
    server = Server(cfg)
    if isinstance(model, LoadedModel):
        server.set_model(model)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        server.worker.start()
        if not isinstance(model, LoadedModel):
            server.worker.submit(lambda: server.load(model))
        yield
        server.worker.stop()

    app = FastAPI(title="layerskip", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible server with early-exit self-speculative decoding")
    app.state.server = server
    install_error_handlers(app)
    _health_route(app, server)
    router = _routes(server)
    app.include_router(router)
    _openapi(app, server)
    endpoints = {getattr(r, "path", "") for r in app.routes} | {r.path for r in router.routes}
    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=server.metrics, endpoints=endpoints)
    return app
