"""The web page and JSON API over a gallery index (`unseen serve`): FastAPI, served by uvicorn.

    GET  /                            the page: upload a query or pick a gallery image, see the top-k grid
    GET  /api/health                  {"status": "ok", "images": N}
    GET  /api/index                   what the index is: kind, counts, recall@10, model reference, limits
    GET  /api/items?offset=&limit=    gallery items (row, name, label, thumbnail URL), to pick a query from
    GET  /api/items/{row}             one gallery item
    GET  /api/items/{row}/thumbnail   its thumbnail (PNG)
    GET  /api/search/{row}?k=         the k nearest gallery images of gallery row `row` (itself left out)
    POST /api/search?k=               multipart/form-data with a file field `image`: its k nearest gallery images

Safety: the only names that reach the filesystem are the manifest's own paths, chosen by row number; an upload
is limited in bytes (checked on the stream, before parsing) and in pixels (checked from the header, before
decoding), must be a JPEG, PNG, GIF, BMP, WebP or TIFF that Pillow decodes in full (its decompression-bomb guard
on), and every bad request is answered with a 4xx JSON `{"error": message}`. Hits carry the file name, not the
server's path. One network serves every request, one forward pass at a time; index searches run in parallel
(`Searcher`), each single-threaded.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from unseen.retrieval.errors import UploadError
from unseen.retrieval.search import QueryResult, Searcher
from unseen.retrieval.thumbnails import open_thumbnail, png_bytes

DEFAULT_MAX_UPLOAD_BYTES = 10 * 2**20
DEFAULT_MAX_PIXELS = 40_000_000
ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")
THUMBNAIL_CACHE = 1024
MULTIPART_SLACK = 64 * 1024  # request bytes allowed beyond the upload limit for multipart headers
ASSETS = {"/": ("index.html", "text/html; charset=utf-8"), "/static/app.js": ("app.js", "text/javascript"),
          "/static/style.css": ("style.css", "text/css")}
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
                                 b"script-src 'self'; frame-ancestors 'none'; form-action 'self'"),
]

log = logging.getLogger("unseen.server")


@dataclass(frozen=True)
class Limits:
    """What the server accepts: upload bytes, decoded pixels, k."""

    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_k: int = 100


def create_app(searcher: Searcher, limits: Limits | None = None) -> _Guard:
    """The ASGI application serving `searcher` (wrapped in the byte limit and the security headers)."""
    limits = limits or Limits()
    index = searcher.index
    thumbnails = _ThumbnailCache(index.paths, limits.max_pixels)
    app = FastAPI(title="unseen gallery search", docs_url=None, redoc_url=None, openapi_url=None)
    k_query = Query(10, ge=1, le=limits.max_k, description="how many gallery images to return")

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message, "status": status}, status_code=status)

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, exc: UploadError) -> JSONResponse:
        return error(exc.status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first.get("loc", ())[1:]) or "request"
        return error(400, f"{field}: {first.get('msg', 'invalid')} (got {str(first.get('input'))[:40]!r})")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return error(500, "internal error; the server log has the details")

    def item_of(row: int) -> int:
        if not 0 <= row < index.count:
            raise HTTPException(404, f"row {row}: no such gallery item (rows 0 to {index.count - 1})")
        return row

    def item(row: int) -> dict[str, Any]:
        return {"row": row, "name": Path(index.paths[row]).name, "label": index.labels[row],
                "thumbnail": f"/api/items/{row}/thumbnail"}

    def answer(result: QueryResult, query: dict[str, Any], k: int) -> dict[str, Any]:
        hits = [{**item(hit.row), "rank": hit.rank, "similarity": hit.similarity} for hit in result.hits]
        return {"query": query, "k": k, "hits": hits}

    for route, (name, media_type) in ASSETS.items():
        body = resources.files("unseen.retrieval").joinpath("static", name).read_bytes()
        app.add_api_route(route, _asset(body, media_type), methods=["GET"], include_in_schema=False)

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "images": index.count}

    @app.get("/api/index")
    def index_info() -> dict[str, Any]:
        model = index.model
        return {
            "images": index.count, "dim": index.dim, "kind": index.kind, "parameters": index.info.get("parameters"),
            "recall@10": index.info.get("recall@10"), "labels": len({label for label in index.labels if label}),
            "labelled": sum(bool(label) for label in index.labels),
            "model": {"run": Path(model["run"]).name if model.get("run") else None,
                      "checkpoint": Path(model["checkpoint"]).name if model.get("checkpoint") else None,
                      "fingerprint": model["fingerprint"], "commit": model.get("commit"), "step": model.get("step"),
                      "image_size": model["spec"]["image_size"], "embedding_dim": model["spec"]["embedding_dim"]},
            "limits": asdict(limits), "created": index.info.get("created"), "updated": index.info.get("updated"),
        }

    @app.get("/api/items")
    def items(offset: int = Query(0, ge=0), limit: int = Query(24, ge=1, le=200)) -> dict[str, Any]:
        return {"total": index.count, "offset": offset,
                "items": [item(row) for row in range(offset, min(offset + limit, index.count))]}

    @app.get("/api/items/{row}")
    def one_item(row: int) -> dict[str, Any]:
        return item(item_of(row))

    @app.get("/api/items/{row}/thumbnail")
    def thumbnail(row: int) -> Response:
        data = thumbnails.get(item_of(row))
        if data is None:
            raise HTTPException(404, f"row {row}: its image file is no longer readable on the server")
        return Response(data, media_type="image/png", headers={"cache-control": "max-age=3600"})

    @app.get("/api/search/{row}")
    def search_row(row: int, k: int = k_query) -> dict[str, Any]:
        return answer(searcher.search_row(item_of(row), k), item(row), k)

    @app.post("/api/search")
    async def search_upload(request: Request, k: int = k_query) -> dict[str, Any]:
        data, name = await _read_upload(request, limits.max_upload_bytes)
        image = await run_in_threadpool(decode_upload, data, limits.max_pixels)
        try:
            converted = image.convert("L" if searcher.embedder.spec.in_chans == 1 else "RGB")
        except Exception as exc:  # a pixel mode Pillow cannot convert: the upload's fault, not the server's
            raise UploadError(f"image: its {image.mode} pixels cannot be converted ({_reason(exc)})", 422) from None
        result = await run_in_threadpool(searcher.search_images, [converted], k, [name])
        return answer(result[0], {"name": name, "width": image.width, "height": image.height}, k)

    return _Guard(app, limits.max_upload_bytes + MULTIPART_SLACK)


def decode_upload(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """An uploaded file decoded in full, or an UploadError with the HTTP status to answer: 400 empty, 415 not an
    accepted image format, 413 over `max_pixels` (from the header, before decoding; Pillow's decompression-bomb
    guard also stays on), 422 truncated or corrupt."""
    if not data:
        raise UploadError("image: the file is empty", 400)
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise UploadError(f"image: refused as a decompression bomb ({_reason(exc)})", 413) from None
    except Exception as exc:  # Pillow raises many kinds on hostile input; all mean "not an image"
        raise UploadError(f"image: not an image file ({_reason(exc)}); send {', '.join(ALLOWED_FORMATS)}", 415) \
            from None
    if image.format not in ALLOWED_FORMATS:
        raise UploadError(f"image: {image.format} files are not accepted; send {', '.join(ALLOWED_FORMATS)}", 415)
    width, height = image.size
    if width * height > max_pixels:
        raise UploadError(f"image: {width}×{height} = {width * height:,} pixels; the limit is {max_pixels:,}", 413)
    try:
        image.load()
    except Image.DecompressionBombError as exc:
        raise UploadError(f"image: refused as a decompression bomb ({_reason(exc)})", 413) from None
    except Exception as exc:
        raise UploadError(f"image: cannot be decoded, truncated or corrupt ({_reason(exc)})", 422) from None
    return image


async def _read_upload(request: Request, max_bytes: int) -> tuple[bytes, str]:
    """(bytes, file name) of the multipart field `image`, or an UploadError."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UploadError("expected a multipart/form-data body with a file field named 'image'", 400)
    try:
        form = await request.form(max_files=1, max_fields=8)
    except _TooLarge:
        raise UploadError(f"image: larger than the limit of {_megabytes(max_bytes)}", 413) from None
    except Exception as exc:
        raise UploadError(f"the multipart body cannot be read ({_reason(exc)})", 400) from None
    try:
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise UploadError("expected a file field named 'image'", 400)
        data = await upload.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise UploadError(f"image: larger than the limit of {_megabytes(max_bytes)}", 413)
        return data, Path(upload.filename or "upload").name[:200]
    finally:
        await form.close()


class _TooLarge(Exception):
    """Raised from `receive` when a request body passes the byte limit."""


class _Guard:
    """ASGI wrapper: refuse request bodies over `max_body` bytes (by Content-Length at once, else while they
    stream) with a 413 JSON answer, and add the security headers to every response."""

    def __init__(self, app: Any, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await _send_json(send_with_headers, 413, f"request body larger than {_megabytes(self.max_body)}")
            return
        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except _TooLarge:
            if not started:
                await _send_json(send_with_headers, 413, f"request body larger than {_megabytes(self.max_body)}")


async def _send_json(send: Any, status: int, message: str) -> None:
    import json

    body = json.dumps({"error": message, "status": status}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class _ThumbnailCache:
    """PNG thumbnails of gallery rows, made on first request and kept (least recently used dropped first)."""

    def __init__(self, paths: tuple[str, ...], max_pixels: int) -> None:
        self.paths = paths
        self.max_pixels = max_pixels
        self.cache: OrderedDict[int, bytes] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, row: int) -> bytes | None:
        with self.lock:
            if row in self.cache:
                self.cache.move_to_end(row)
                return self.cache[row]
        data = thumbnail_png(self.paths[row], self.max_pixels)
        if data is not None:
            with self.lock:
                self.cache[row] = data
                while len(self.cache) > THUMBNAIL_CACHE:
                    self.cache.popitem(last=False)
        return data


def thumbnail_png(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes | None:
    """A PNG thumbnail of the gallery image at `path`, or None when it cannot be read."""
    image = open_thumbnail(path, max_pixels)
    return None if image is None else png_bytes(image)


def serve(searcher: Searcher, *, host: str = "127.0.0.1", port: int = 8000, limits: Limits | None = None,
          access_log: bool = True) -> None:
    """Run the server until interrupted (uvicorn, one process: one network in memory; at most 64 connections
    at once, more are answered 503)."""
    import faiss
    import uvicorn

    faiss.omp_set_num_threads(1)  # one query per request: an OpenMP team per query only spins; requests run in parallel
    uvicorn.run(create_app(searcher, limits), host=host, port=port, log_level="info", access_log=access_log,
                limit_concurrency=64, timeout_keep_alive=5)


def _asset(body: bytes, media_type: str) -> Any:
    def asset() -> Response:
        return Response(body, media_type=media_type, headers={"cache-control": "no-cache"})

    return asset


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.1f} MB"
