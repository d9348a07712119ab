"""The routes of the app, in three routers over one open index (:func:`~.app.create_app` includes them):

    page_routes    GET /, /app.js, /app.css (the page, under a strict CSP), GET /api/health
    search_routes  POST /api/search (an uploaded image), GET /api/rerankers
    image_routes   GET /api/images, /api/images/{id}, /api/images/{id}/thumbnail, /api/images/{id}/neighbours

Images are served by id only: a path from a request never reaches the file system.
"""

from __future__ import annotations

import functools
import io as _io
import mimetypes
from pathlib import PurePosixPath
from typing import Any, Callable

from fastapi import APIRouter, File, HTTPException, Path, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from PIL import Image

from neuralcodes.data.decode import viewed_rgb
from neuralcodes.index.index import Hit, Index, SearchResults
from neuralcodes.index.queries import BadQueryImage
from neuralcodes.retrieval.rerank import RERANKERS
from neuralcodes.serve.page import CSS, SCRIPT, page_html

MAX_K = 100
MAX_SHORTLIST = (
    1000  # k-reciprocal and diffusion cost grows with the square of the shortlist, per request
)
THUMBNAIL_SIDES = (96, 160, 256)
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
    "form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)
ImageId = Path(..., ge=0, le=2**62, description="an image id of this index")
# A plain string checked by _step, not an enum: FastAPI's enum error is a list the page would show as raw JSON.
Rerank = Query(
    None,
    description=f"re-rank the shortlist with a step: {', '.join(RERANKERS)} (none: plain order)",
)
Shortlist = Query(
    100,
    ge=1,
    le=MAX_SHORTLIST,
    description="the nearest images a re-ranking re-orders (at least k)",
)


def page_routes(index: Index, max_upload_bytes: int) -> APIRouter:
    """The page with its script and style, and the health check a monitor (or the page) asks."""
    router = APIRouter()

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(page_html(index.info(), max_upload_bytes), headers=_page_headers())

    @router.get("/app.js", include_in_schema=False)
    def script() -> Response:
        return Response(SCRIPT, media_type="text/javascript", headers=_page_headers())

    @router.get("/app.css", include_in_schema=False)
    def style() -> Response:
        return Response(CSS, media_type="text/css", headers=_page_headers())

    @router.get("/api/health", summary="Status of the server and its index")
    def health() -> dict[str, Any]:
        now = index.info()
        return {
            "status": "ok",
            "images": now["images"],
            "model": now["model"],
            "backend": now["backend"],
        }

    return router


def search_routes(index: Index, max_upload_bytes: int) -> APIRouter:
    """Search with an uploaded image, and the re-ranking steps both searches take."""
    router = APIRouter()

    @router.get("/api/rerankers", summary="The re-ranking steps that rerank= takes")
    def rerankers() -> dict[str, Any]:
        return {
            "rerankers": [
                {
                    "name": name,
                    "about": step.about,
                    "uses_database": step.uses_database,
                    "defaults": step.defaults,
                }
                for name, step in RERANKERS.items()
            ]
        }

    @router.post("/api/search", summary="The k nearest images to an uploaded image")
    async def search(
        image: UploadFile = File(..., description="an image file"),
        k: int = Query(10, ge=1, le=MAX_K),
        rerank: str | None = Rerank,
        shortlist: int = Shortlist,
    ) -> dict[str, Any]:
        rerank = _step(rerank)  # before the upload is decoded
        data = await image.read()
        if not data:
            raise HTTPException(400, "the upload is empty: choose an image file")
        if len(data) > max_upload_bytes:
            raise HTTPException(
                413, f"the upload is over the upload limit of {describe_size(max_upload_bytes)}"
            )
        try:
            # The index decodes the bytes itself (once), as it decodes any query image.
            results = await run_in_threadpool(index.search, [data], k, rerank, shortlist)
        except BadQueryImage as bad:
            status = 413 if bad.kind == "too large" else 415
            raise HTTPException(
                status, f"the upload is not an image this server can read: {bad.reason}"
            ) from None
        return _results(results, k)

    return router


def image_routes(index: Index) -> APIRouter:
    """The collection a page at a time, and each image by id: its file, thumbnail and nearest images."""
    router = APIRouter()

    @router.get("/api/images", summary="The collection's images in id order, a page at a time")
    def images(
        offset: int = Query(0, ge=0, le=2**62), limit: int = Query(48, ge=1, le=500)
    ) -> dict[str, Any]:
        return {
            "total": len(index),
            "offset": offset,
            "images": [_hit(h) for h in index.browse(offset, limit)],
        }

    @router.get("/api/images/{image_id}", summary="An image file of the collection, by id")
    def image_file(image_id: int = ImageId) -> Response:
        return _file_response(*_read(index, image_id))

    cached_thumbnail = _thumbnails(index)

    @router.get("/api/images/{image_id}/thumbnail", summary="A JPEG thumbnail of an image, by id")
    def thumbnail(
        image_id: int = ImageId, size: int = Query(160, description="96, 160 or 256")
    ) -> Response:
        if size not in THUMBNAIL_SIDES:
            raise HTTPException(422, f"size must be one of {', '.join(map(str, THUMBNAIL_SIDES))}")
        _record(index, image_id)  # removed by another process: 404, whatever the cache holds
        return Response(
            cached_thumbnail(image_id, size),
            media_type="image/jpeg",
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "max-age=3600"},
        )

    @router.get(
        "/api/images/{image_id}/neighbours",
        summary="The k nearest images to an image of the collection",
    )
    def neighbours(
        image_id: int = ImageId,
        k: int = Query(10, ge=1, le=MAX_K),
        rerank: str | None = Rerank,
        shortlist: int = Shortlist,
    ) -> dict[str, Any]:
        rerank = _step(rerank)
        # The record first, inside the 404: another process may remove the image at any moment.
        query = _record(index, image_id)
        try:
            results = index.search_ids([image_id], k, rerank, shortlist)
        except KeyError:
            raise HTTPException(404, f"no image with id {image_id} in this index") from None
        return {"query": _hit(query), **_results(results, k)}

    return router


def _thumbnails(index: Index) -> Callable[[int, int], bytes]:
    """JPEG thumbnails by (id, side), cached. Ids are never reused (codes are only appended), so a cached
    thumbnail stays its image's; whether the image is still in the index is asked before the cache."""

    @functools.lru_cache(maxsize=4096)
    def cached_thumbnail(image_id: int, side: int) -> bytes:
        _, data = _read(index, image_id)
        try:
            return _thumbnail(data, side)
        except Exception:  # noqa: BLE001 - changed or damaged since it was indexed
            raise HTTPException(
                404, f"image {image_id} is in the index but its file can no longer be decoded"
            ) from None

    return cached_thumbnail


def _file_response(hit: Hit, data: bytes) -> Response:
    """An image file's bytes, typed by its name's extension (never as markup or a script)."""
    media = mimetypes.guess_type(PurePosixPath(hit.path).name)[0] or "application/octet-stream"
    if not media.startswith("image/") or media == "image/svg+xml":  # never serve markup or scripts
        media = "application/octet-stream"
    return Response(
        data,
        media_type=media,
        headers={
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": "inline",
            "Cache-Control": "max-age=3600",
        },
    )


def describe_size(n: int) -> str:
    """A byte count as the limits' messages say it (KiB below a MiB)."""
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def _record(index: Index, image_id: int) -> Hit:
    try:
        return index.record(image_id)
    except KeyError:
        raise HTTPException(404, f"no image with id {image_id} in this index") from None


def _read(index: Index, image_id: int) -> tuple[Hit, bytes]:
    hit = _record(index, image_id)
    try:
        return hit, index.read_image(image_id)
    except KeyError:  # removed since the record was read
        raise HTTPException(404, f"no image with id {image_id} in this index") from None
    except FileNotFoundError:
        # The file moved or was deleted since it was indexed; its location stays private to the server.
        raise HTTPException(
            404, f"image {image_id} is in the index but its file can no longer be read"
        ) from None


def _thumbnail(data: bytes, side: int) -> bytes:
    """A JPEG no larger than side x side, aspect ratio kept, its pixels as the index saw them."""
    with Image.open(_io.BytesIO(data)) as im:
        if im.width * im.height > (Image.MAX_IMAGE_PIXELS or 2**62):
            raise ValueError(
                "too many pixels"
            )  # replaced by a decompression bomb since it was indexed
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
    return {
        "id": hit.id,
        "path": hit.path,
        "label": hit.label,
        "width": hit.width,
        "height": hit.height,
        "distance": hit.distance,
        "image": f"/api/images/{hit.id}",
        "thumbnail": f"/api/images/{hit.id}/thumbnail",
    }


def _step(rerank: str | None) -> str | None:
    """The re-ranking step asked for (None for none); 422 naming the steps for an unknown one."""
    if rerank in (None, "", "none"):
        return None
    if rerank not in RERANKERS:
        raise HTTPException(
            422,
            f"unknown re-ranking {rerank!r}; rerank must be none or one of {', '.join(RERANKERS)}",
        )
    return rerank


def _results(results: SearchResults, k: int) -> dict[str, Any]:
    hits = results.hits[0]
    # Re-ranked results are in the step's order: the distances need not increase, so say which order this is.
    return {
        "k": k,
        "rerank": results.rerank,
        "shortlist": results.shortlist,
        "results": [{"rank": rank, **_hit(h)} for rank, h in enumerate(hits, start=1)],
    }


def _page_headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
