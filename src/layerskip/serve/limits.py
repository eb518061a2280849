"""Request limits: body size (before anything is parsed), prompt length and max_tokens (each
refused with a 4xx that names the limit)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from layerskip.serve.config import ServerConfig
from layerskip.serve.errors import APIError


def too_large(max_bytes: int) -> APIError:
    return APIError(413, f"request body exceeds the limit of {max_bytes} bytes", code="request_too_large")


class BodyLimit:
    """ASGI middleware: read the body up to `max_bytes` (Content-Length or chunked), answer 413
    beyond it, and hand the app the body in one piece."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_bytes:
            return await too_large(self.max_bytes).response()(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await too_large(self.max_bytes).response()(scope, receive, send)
            more = message.get("more_body", False)
        body: Message | None = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay() -> Message:
            nonlocal body
            if body is not None:
                message, body = body, None
                return message
            return await receive()  # after the body: waits for the client to disconnect

        await self.app(scope, replay, send)


def max_new_tokens(prompt_tokens: int, asked: int | None, cfg: ServerConfig, context: int, param: str) -> int:
    """Check the prompt and max_tokens against the limits; return how many tokens to generate.

    `asked` is None when the request left max_tokens out: then the server default, clamped to
    the room left in the context.
    """
    max_prompt = min(cfg.max_prompt_tokens or context, context - 2)
    if prompt_tokens > max_prompt:
        raise APIError(400, f"the prompt has {prompt_tokens} tokens; the limit is {max_prompt}",
                       param=param, code="context_length_exceeded")
    if asked is not None and asked > cfg.max_tokens:
        raise APIError(400, f"max_tokens ({asked}) exceeds the server's limit of {cfg.max_tokens}", param="max_tokens")
    room = context - prompt_tokens - 1
    if asked is None:
        return min(cfg.generation.max_new_tokens, cfg.max_tokens, room)
    if asked > room:
        raise APIError(400, f"prompt ({prompt_tokens} tokens) + max_tokens ({asked}) exceeds the model's "
                       f"context of {context} tokens", param="max_tokens", code="context_length_exceeded")
    return asked
