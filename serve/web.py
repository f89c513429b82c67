"""HTTP plumbing shared by every router: the one error shape, the body size cap, a JSON parser that never fails
with a 500, and the handlers that put every error (unknown routes included) into `{"detail": [{loc, msg}]}`."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ltxtrain.api.errors import ErrorItem, RequestError

log = logging.getLogger("ltxtrain.serve")


def problem(code: int, loc: list, msg: str, headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse({"detail": [{"loc": loc, "msg": msg}], **extra}, status_code=code, headers=headers)


class BodyTooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"the request body is larger than the limit of {limit} bytes")
        self.limit = limit


class BodyLimit:
    """ASGI middleware: a body over `max_bytes` answers 413, by its Content-Length up front or, when streamed
    without one, as soon as the count passes the cap (the rest is never read)."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.strip().isdigit() or int(length) > self.max_bytes):
            return await _send(problem(413, ["body"], str(BodyTooLarge(self.max_bytes))), scope, receive, send)
        seen = 0
        started = False

        async def counted_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge as exc:  # raised inside a route that read the body
            if not started:
                await _send(problem(413, ["body"], str(exc)), scope, receive, send)


async def _send(response, scope, receive, send):
    await response(scope, receive, send)


async def read_json(request: Request, max_depth: int):
    """The body as JSON, or a RequestError (422 at ["body"]) for anything that is not plain, finite JSON nested at
    most `max_depth` deep. An empty body reads as null."""
    raw = await request.body()
    try:
        value = json.loads(raw or b"null", parse_constant=_no_constants)
    except RecursionError:
        raise RequestError(ErrorItem(("body",), f"the JSON is nested deeper than {max_depth} levels")) from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, NaN/Infinity, integers past the digit limit
        raise RequestError(ErrorItem(("body",), f"the body is not valid JSON: {_short(exc)}")) from None
    if _depth(value, max_depth) > max_depth:
        raise RequestError(ErrorItem(("body",), f"the JSON is nested deeper than {max_depth} levels"))
    return value


def _no_constants(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text[:200] + ("…" if len(text) > 200 else "")


def _depth(value, limit: int) -> int:
    """Nesting depth of containers (a scalar is 0), counted without recursion; stops early past `limit`."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def _request_error(_request: Request, exc: RequestError):
        return JSONResponse({"detail": [e.to_json() for e in exc.errors]}, status_code=422)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(_request: Request, exc: BodyTooLarge):
        return problem(413, ["body"], str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError):
        # FastAPI's own checks (query parameters): the same {loc, msg} items, without echoing the input back
        items = [{"loc": list(e.get("loc", [])), "msg": str(e.get("msg", "invalid value"))} for e in exc.errors()]
        return JSONResponse({"detail": items}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if isinstance(exc.detail, list):  # already in our shape
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        if exc.status_code in (404, 405):  # a method and path that is not one of our routes
            return problem(404, ["path"], f"no route {request.method} {request.url.path}")
        return problem(exc.status_code, [], str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, [], "internal error")
