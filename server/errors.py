"""Errors as OpenAI error bodies: ``{"error": {"message", "type", "param", "code"}}`` with the status
the official clients map to their exception classes (400 BadRequestError, 401 AuthenticationError,
403 PermissionDeniedError, 404 NotFoundError, 413, 429 RateLimitError, 500/503 InternalServerError).

Route code raises ``APIError`` or lets the engine's own errors through; ``api_error`` is the one
place that says which status each of them gets. Anything unexpected is a 500 whose body says only
that: the traceback goes to the server log, never to the client."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from loomlm.async_engine_loop import EngineStoppedError
from loomlm.common.errors import PromptTooLongError, QueueFullError, RequestError

logger = logging.getLogger(__name__)

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"


class APIError(Exception):
    """An HTTP error with an OpenAI body; ``headers`` go on the response (e.g. Retry-After)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = INVALID_REQUEST,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


class ClientDisconnected(Exception):
    """The client went away before its response was ready; its request is aborted already."""


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def unavailable(message: str, code: str = "service_unavailable") -> APIError:
    return APIError(503, message, type=SERVER_ERROR, code=code, headers={"Retry-After": "5"})


def model_not_found(name: str | None) -> APIError:
    return APIError(
        404, f"The model `{name}` does not exist; GET /v1/models lists the served models and adapters.",
        param="model", code="model_not_found",
    )  # fmt: skip


def internal_error() -> APIError:
    return APIError(500, "The server had an internal error; see the server log.", type=SERVER_ERROR,
                    code="internal_error")  # fmt: skip


def api_error(error: BaseException) -> APIError:
    """The HTTP error for an exception raised while checking or queueing a request."""
    if isinstance(error, APIError):
        return error
    if isinstance(error, QueueFullError):
        return APIError(
            429, str(error), type="rate_limit_error", code="queue_full", headers={"Retry-After": "1"}
        )
    if isinstance(error, PromptTooLongError):
        return APIError(413, str(error), code="prompt_too_long")
    if isinstance(error, EngineStoppedError):
        return unavailable(f"The server is not accepting requests: {error}", code="engine_stopped")
    if isinstance(error, ValidationError):  # SamplingParams' own checks
        return validation_error(error.errors(include_url=False))
    if isinstance(error, RequestError):  # bad prompt, params, adapter, response format or tools
        return bad_request(str(error), code=type(error).__name__)
    if isinstance(error, ValueError):  # malformed messages and the like, found while queueing
        return bad_request(str(error))
    logger.error("internal error", exc_info=error)
    return internal_error()


def validation_error(errors: list[dict[str, Any]]) -> APIError:
    """Pydantic's errors as one 400: the first one names the parameter (OpenAI reports one)."""
    if not errors:
        return bad_request("invalid request")
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(loc) or None
    message = str(first.get("msg", "invalid value"))
    if first.get("type") == "json_invalid":
        return bad_request(
            f"The request body is not valid JSON: {first.get('ctx', {}).get('error', message)}"
        )
    more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
    return bad_request(f"{param}: {message}{more}" if param else f"{message}{more}", param=param)


def install_error_handlers(app: FastAPI) -> None:
    """OpenAI bodies for every error FastAPI and the routes raise (FastAPI's 422 becomes 400)."""

    async def on_api_error(request: Request, error: Exception) -> Response:
        return api_error(error).response()

    async def on_validation(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        return validation_error(list(error.errors())).response()

    async def on_http(request: Request, error: Exception) -> Response:
        assert isinstance(error, StarletteHTTPException)
        kind = INVALID_REQUEST if error.status_code < 500 else SERVER_ERROR
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code)
        body = APIError(error.status_code, str(error.detail), type=kind, code=code)
        return JSONResponse(body.body(), status_code=error.status_code, headers=error.headers)

    async def on_disconnect(request: Request, error: Exception) -> Response:
        return Response(status_code=499)  # nobody reads it: nginx's "client closed request"

    async def on_unexpected(request: Request, error: Exception) -> Response:
        logger.error("unhandled error in %s %s", request.method, request.url.path, exc_info=error)
        return internal_error().response()

    app.add_exception_handler(APIError, on_api_error)
    app.add_exception_handler(RequestError, on_api_error)
    app.add_exception_handler(EngineStoppedError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(ClientDisconnected, on_disconnect)
    app.add_exception_handler(Exception, on_unexpected)
