"""OpenAI-style error answers: every failure becomes `{"error": {message, type, param, code}}`,
never a stack trace."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

log = logging.getLogger("layerskip.serve")


class APIError(Exception):
    """An answer other than 200, raised anywhere in a request and rendered by the handlers below."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), self.status, headers=self.headers)


def unavailable(message: str, retry_after_s: int, code: str = "overloaded") -> APIError:
    return APIError(503, message, "server_error", code=code, headers={"Retry-After": str(retry_after_s)})


def validation_error(e: RequestValidationError) -> APIError:
    """The first problems pydantic found, named by their field."""
    errors = e.errors()
    if errors and errors[0]["type"] == "json_invalid":
        return APIError(400, f"request body is not valid JSON: {errors[0].get('ctx', {}).get('error', '')}")
    parts, param = [], None
    for err in errors[:3]:
        loc = ".".join(str(p) for p in err["loc"] if p != "body")
        param = param or loc or None
        parts.append(f"{loc}: {err['msg']}" if loc else f"the body must be a JSON object ({err['msg']})")
    return APIError(400, "; ".join(parts) or "invalid request", param=param)


def install_error_handlers(app: FastAPI) -> None:
    async def api_error(_: Request, e: APIError) -> JSONResponse:
        return e.response()

    async def invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        return validation_error(e).response()

    async def http_error(_: Request, e: HTTPException) -> JSONResponse:
        code = "not_found" if e.status_code == 404 else None
        return APIError(e.status_code, str(e.detail), param=None, code=code, headers=e.headers).response()

    async def internal(_: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=e)
        return APIError(500, "internal server error", "server_error").response()

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, internal)
