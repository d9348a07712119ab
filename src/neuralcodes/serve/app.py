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
"""
from __future__ import annotations

import functools
import io as _io
import logging
import mimetypes
from pathlib import PurePosixPath
from typing import Any, Awaitable, Callable

from fastapi import FastAPI, File, HTTPException, Path, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image
from starlette.middleware.trustedhost import TrustedHostMiddleware

from neuralcodes.data.decode import viewed_rgb
from neuralcodes.index.collection import Skipped, decode_bytes
from neuralcodes.index.index import Hit, Index, SearchResults
from neuralcodes.retrieval.rerank import RERANKERS
from neuralcodes.serve.page import CSS, SCRIPT, page_html

log = logging.getLogger("neuralcodes.serve")

MAX_UPLOAD_BYTES = 20 << 20
MAX_K = 100
MAX_SHORTLIST = 1000  # k-reciprocal and diffusion cost grows with the square of the shortlist, per request
THUMBNAIL_SIDES = (96, 160, 256)
_MULTIPART_OVERHEAD = 64 << 10  # boundaries and part headers around the file itself
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
       "form-action 'none'; base-uri 'none'; frame-ancestors 'none'")
ImageId = Path(..., ge=0, le=2**62, description="an image id of this index")
# A plain string checked by _step, not an enum: FastAPI's enum error is a list the page would show as raw JSON.
Rerank = Query(None, description=f"re-rank the shortlist with a step: {', '.join(RERANKERS)} (none: plain order)")
Shortlist = Query(100, ge=1, le=MAX_SHORTLIST, description="the nearest images a re-ranking re-orders (at least k)")


def create_app(index: Index, max_upload_bytes: int = MAX_UPLOAD_BYTES, allowed_hosts: list[str] | None = None) -> FastAPI:
    """The app serving ``index``. ``allowed_hosts``: Host headers accepted (None: any), against DNS rebinding."""
    info = index.info()
    app = FastAPI(title="neuralcodes image search", version=str(info["format_version"]),
                  description=f"Search {info['images']:,} images by example ({info['model']}).")
    if allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    app.add_middleware(BodySizeLimit, limit=max_upload_bytes + _MULTIPART_OVERHEAD)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("error answering %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; the server's log says more"}, status_code=500)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(page_html(index.info(), max_upload_bytes), headers=_page_headers())

    @app.get("/app.js", include_in_schema=False)
    def script() -> Response:
        return Response(SCRIPT, media_type="text/javascript", headers=_page_headers())

    @app.get("/app.css", include_in_schema=False)
    def style() -> Response:
        return Response(CSS, media_type="text/css", headers=_page_headers())

    @app.get("/api/health", summary="Status of the server and its index")
    def health() -> dict[str, Any]:
        now = index.info()
        return {"status": "ok", "images": now["images"], "model": now["model"], "backend": now["backend"]}

    @app.get("/api/rerankers", summary="The re-ranking steps that rerank= takes")
    def rerankers() -> dict[str, Any]:
        return {"rerankers": [{"name": name, "about": step.about, "uses_database": step.uses_database,
                               "defaults": step.defaults} for name, step in RERANKERS.items()]}  # fmt: skip

    @app.post("/api/search", summary="The k nearest images to an uploaded image")
    async def search(image: UploadFile = File(..., description="an image file"),
                     k: int = Query(10, ge=1, le=MAX_K), rerank: str | None = Rerank,
                     shortlist: int = Shortlist) -> dict[str, Any]:
        rerank = _step(rerank)  # before the upload is decoded
        data = await image.read()
        if not data:
            raise HTTPException(400, "the upload is empty: choose an image file")
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"the upload is over the upload limit of {_size(max_upload_bytes)}")
        try:
            pixels = await run_in_threadpool(decode_bytes, data, "upload", index.model.image_size)
        except Skipped as skipped:
            status = 413 if skipped.kind == "too large" else 415
            raise HTTPException(status, f"the upload is not an image this server can read: {skipped.reason}") from None
        results = await run_in_threadpool(lambda: index.search([pixels.pixels], k, rerank, shortlist))
        return _results(results, k)

    @app.get("/api/images", summary="The collection's images in id order, a page at a time")
    def images(offset: int = Query(0, ge=0, le=2**62), limit: int = Query(48, ge=1, le=500)) -> dict[str, Any]:
        return {"total": len(index), "offset": offset, "images": [_hit(h) for h in index.browse(offset, limit)]}

    @app.get("/api/images/{image_id}", summary="An image file of the collection, by id")
    def image_file(image_id: int = ImageId) -> Response:
        hit, data = _read(index, image_id)
        media = mimetypes.guess_type(PurePosixPath(hit.path).name)[0] or "application/octet-stream"
        if not media.startswith("image/") or media == "image/svg+xml":  # never serve markup or scripts
            media = "application/octet-stream"
        return Response(data, media_type=media, headers={"X-Content-Type-Options": "nosniff",
                                                         "Content-Disposition": "inline", "Cache-Control": "max-age=3600"})

    @functools.lru_cache(maxsize=4096)  # the index does not change while it is served
    def cached_thumbnail(image_id: int, side: int) -> bytes:
        _, data = _read(index, image_id)
        try:
            return _thumbnail(data, side)
        except Exception:  # noqa: BLE001 - changed or damaged since it was indexed
            raise HTTPException(404, f"image {image_id} is in the index but its file can no longer be decoded") from None

    @app.get("/api/images/{image_id}/thumbnail", summary="A JPEG thumbnail of an image, by id")
    def thumbnail(image_id: int = ImageId, size: int = Query(160, description="96, 160 or 256")) -> Response:
        if size not in THUMBNAIL_SIDES:
            raise HTTPException(422, f"size must be one of {', '.join(map(str, THUMBNAIL_SIDES))}")
        return Response(cached_thumbnail(image_id, size), media_type="image/jpeg",
                        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "max-age=3600"})

    @app.get("/api/images/{image_id}/neighbours", summary="The k nearest images to an image of the collection")
    def neighbours(image_id: int = ImageId, k: int = Query(10, ge=1, le=MAX_K), rerank: str | None = Rerank,
                   shortlist: int = Shortlist) -> dict[str, Any]:
        rerank = _step(rerank)
        try:
            results = index.search_ids([image_id], k, rerank, shortlist)
        except KeyError:
            raise HTTPException(404, f"no image with id {image_id} in this index") from None
        return {"query": _hit(index.record(image_id)), **_results(results, k)}

    return app


class BodySizeLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413 before the app sees any of it.

    A declared Content-Length over the limit is refused at once (the server holds a client to the
    length it declared); a body of unknown length is read here, up to the limit, then handed on.
    """

    def __init__(self, app: Callable, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable) -> None:
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
        response = JSONResponse({"detail": f"the request body is over the upload limit of {_size(self.limit)}"}, 413)
        await response(scope, receive, send)


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def _read(index: Index, image_id: int) -> tuple[Hit, bytes]:
    try:
        hit = index.record(image_id)
        return hit, index.read_image(image_id)
    except KeyError:
        raise HTTPException(404, f"no image with id {image_id} in this index") from None
    except FileNotFoundError:
        # The file moved or was deleted since it was indexed; its location stays private to the server.
        raise HTTPException(404, f"image {image_id} is in the index but its file can no longer be read") from None


def _thumbnail(data: bytes, side: int) -> bytes:
    """A JPEG no larger than side x side, aspect ratio kept, its pixels as the index saw them."""
    with Image.open(_io.BytesIO(data)) as im:
        if im.width * im.height > (Image.MAX_IMAGE_PIXELS or 2**62):
            raise ValueError("too many pixels")  # replaced by a decompression bomb since it was indexed
        im.draft("RGB", (side, side))  # JPEG: decode at a reduced scale directly
        # Not convert("RGB"): that clips 16-bit images to white and shows the hidden colour of transparent
        # pixels; the decoder's rule (orientation, alpha over white, CMYK profile) is what was indexed.
        im = Image.fromarray(viewed_rgb(im))
        im.thumbnail((side, side), Image.Resampling.BICUBIC)
        out = _io.BytesIO()
        im.save(out, format="JPEG", quality=85)
    return out.getvalue()


def _hit(hit: Hit) -> dict[str, Any]:
    # The source folder stays private: paths are shown relative to it.
    return {"id": hit.id, "path": hit.path, "label": hit.label, "width": hit.width, "height": hit.height,
            "distance": hit.distance, "image": f"/api/images/{hit.id}", "thumbnail": f"/api/images/{hit.id}/thumbnail"}


def _step(rerank: str | None) -> str | None:
    """The re-ranking step asked for (None for none); 422 naming the steps for an unknown one."""
    if rerank in (None, "", "none"):
        return None
    if rerank not in RERANKERS:
        raise HTTPException(422, f"unknown re-ranking {rerank!r}; rerank must be none or one of {', '.join(RERANKERS)}")
    return rerank


def _results(results: SearchResults, k: int) -> dict[str, Any]:
    hits = results.hits[0]
    # Re-ranked results are in the step's order: the distances need not increase, so say which order this is.
    return {"k": k, "rerank": results.rerank, "shortlist": results.shortlist,
            "results": [{"rank": rank, **_hit(h)} for rank, h in enumerate(hits, start=1)]}


def _page_headers() -> dict[str, str]:
    return {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
