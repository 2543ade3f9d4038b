"""Plain ASGI middleware (not Starlette's BaseHTTPMiddleware, which would wrap ``receive`` and hide
a client's disconnect from the routes): HTTP request counting, bearer-key checks and the request
body bound. Order, outermost first: count, authenticate, bound the body: an unauthenticated client
never makes the server buffer a body."""

from __future__ import annotations

import hmac
from collections.abc import Collection

from prometheus_client import CollectorRegistry, Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loomlm.server.errors import APIError

OPEN_PATHS = frozenset({"/health", "/metrics"})


class HttpMetrics:
    """``loomlm:http_requests_total{method, path, status}`` in the server's own registry. ``path`` is
    the route's template (``/v1/models/{model:path}``), ``other`` for a path that is no route, so
    that neither ids nor scanners grow the label set."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "loomlm:http_requests", "HTTP requests by method, route and status.",
            ["method", "path", "status"], registry=self.registry,
        )  # fmt: skip


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # unless a response starts

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")  # set in place by the router once a route matched
            path = getattr(route, "path", None) or "other"
            self.metrics.requests.labels(scope["method"], path, str(status)).inc()


class AuthMiddleware:
    """``Authorization: Bearer <key>``: the API key on every path but /health and /metrics, the
    admin key (and only it) on ``admin_paths``. Wrong or missing key: 401; the API key where the
    admin key is needed: 403. Keys are compared in constant time."""

    def __init__(
        self, app: ASGIApp, api_key: str | None, admin_key: str | None, admin_paths: Collection[str]
    ) -> None:
        self.app, self.admin_paths = app, frozenset(admin_paths)
        self.api_key = api_key.encode() if api_key else None
        self.admin_key = admin_key.encode() if admin_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            error = self._check(_bearer(scope), scope["path"] in self.admin_paths)
            if error is not None:
                await error.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _check(self, token: bytes | None, admin: bool) -> APIError | None:
        if admin:
            if _same(token, self.admin_key):
                return None
            if _same(token, self.api_key):
                return APIError(403, "This route needs the admin key, not the API key.",
                                type="permission_error", code="admin_key_required")  # fmt: skip
            return _unauthorized("This route needs the admin key: Authorization: Bearer <admin key>.")
        if self.api_key is None or _same(token, self.api_key):
            return None
        return _unauthorized("Incorrect or missing API key: send Authorization: Bearer <key>.")


class BodyLimitMiddleware:
    """Refuse a request body over ``max_bytes`` with 413, by its Content-Length or, without one,
    once that many bytes arrived. The body is read here and handed on whole; the app's later
    ``receive`` calls go to the server (so a disconnect still reaches the routes)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._too_large().response()(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # gone before its body arrived: nothing to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large().response()(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self) -> APIError:
        return APIError(413, f"The request body is over {self.max_bytes} bytes.", code="request_too_large")


def _unauthorized(message: str) -> APIError:
    return APIError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


def _same(token: bytes | None, key: bytes | None) -> bool:
    return token is not None and key is not None and hmac.compare_digest(token, key)


def _bearer(scope: Scope) -> bytes | None:
    value = _header(scope, b"authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip().encode() if scheme.lower() == "bearer" and token.strip() else None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None
