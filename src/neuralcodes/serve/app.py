"""The web app of an index (FastAPI): a search page and a JSON API.

    GET  /                              the page: drop or pick an image, or click one of the collection
    POST /api/search?k=10               multipart field ``image``: the k nearest images, as JSON
    GET  /api/images?offset=&limit=     the collection, a page at a time
    GET  /api/images/{id}               the image file          GET /api/images/{id}/thumbnail
    GET  /api/images/{id}/neighbours    search with an image of the collection
    GET  /api/rerankers                 the re-ranking steps (both searches take &rerank=STEP&shortlist=N)
    GET  /api/health                    status, count, model;   GET /openapi.json, /docs: the schema

Safe by default: uploads are size-limited before they are read; bad images get a 4xx that says why;
images are served by id only (a path from a request never reaches the file system, and a stored
path that resolves outside its folder is refused); errors never carry a stack trace; the page
builds every label and file name with ``textContent``, never as HTML, under a strict CSP.

The routes are three routers of :mod:`.routes` (page, search, images); this module puts them together
behind the middleware: the allowed hosts, the body size limit, and an error handler that logs.
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.middleware.trustedhost import TrustedHostMiddleware

from neuralcodes.index.index import Index
from neuralcodes.serve.routes import describe_size, image_routes, page_routes, search_routes

log = logging.getLogger("neuralcodes.serve")

MAX_UPLOAD_BYTES = 20 << 20
_MULTIPART_OVERHEAD = 64 << 10  # boundaries and part headers around the file itself


def create_app(
    index: Index, max_upload_bytes: int = MAX_UPLOAD_BYTES, allowed_hosts: list[str] | None = None
) -> FastAPI:
    """The app serving ``index``. ``allowed_hosts``: Host headers accepted (None: any), against DNS rebinding."""
    info = index.info()
    app = FastAPI(
        title="neuralcodes image search",
        version=str(info["format_version"]),
        description=f"Search {info['images']:,} images by example ({info['model']}).",
    )
    if allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    app.add_middleware(BodySizeLimit, limit=max_upload_bytes + _MULTIPART_OVERHEAD)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("error answering %s %s", request.method, request.url.path)
        return JSONResponse(
            {"detail": "internal error; the server's log says more"}, status_code=500
        )

    app.include_router(page_routes(index, max_upload_bytes))
    app.include_router(search_routes(index, max_upload_bytes))
    app.include_router(image_routes(index))
    return app


class BodySizeLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413 before the app sees any of it.

    A declared Content-Length over the limit is refused at once (the server holds a client to the
    length it declared); a body of unknown length is read here, up to the limit, then handed on.
    """

    def __init__(self, app: Callable, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(
        self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable
    ) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > self.limit:
                return await self._refuse(scope, receive, send)
            return await self.app(scope, receive, send)
        if b"transfer-encoding" not in headers:  # no body at all
            return await self.app(scope, receive, send)
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await self._refuse(scope, receive, send)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: dict, receive: Callable, send: Callable) -> None:
        response = JSONResponse(
            {"detail": f"the request body is over the upload limit of {describe_size(self.limit)}"},
            413,
        )
        await response(scope, receive, send)
