"""The REST API and upload page: ``create_app(backend, ServeConfig())`` is a FastAPI app.

- ``POST /predict``: an image as a multipart field ``file`` or as the raw body; ``top_k``.
- ``GET /model``: architecture, classes, preprocessing, metrics summary, limits.
- ``GET /health``; ``GET /docs`` and ``/openapi.json``; ``GET /`` the upload page.

Bad input never reaches the model: bodies over the upload limit get 413 before they are
read in full, images over the pixel limit get 413 before they are decoded, and payloads
that are not images (415) or are corrupt (422) get a one-line ``detail``.

Inference runs off the event loop, one batch at a time, through :class:`Batcher`: with
``max_batch > 1`` requests that wait together are classified together (micro-batching).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.types import Message

from transferlab import __version__
from transferlab.backends import Backend
from transferlab.bundle import display_names
from transferlab.calibration import UNKNOWN, is_rejected
from transferlab.data.images import ImageReadError, load_image_bytes
from transferlab.data.transforms import to_base
from transferlab.serve.page import INDEX_HTML

logger = logging.getLogger(__name__)

# Room for multipart boundaries and part headers on top of the file itself.
MULTIPART_OVERHEAD = 64 * 1024


@dataclass(frozen=True)
class ServeConfig:
    """Limits and batching of one server."""

    max_upload_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    top_k: int = 5
    tta: str = "none"
    max_batch: int = 1  # > 1 turns on micro-batching
    batch_window_ms: float = 2.0  # how long the first request of a batch waits for others
    reject_below: float | None = None  # None: the model's own reject_below, if any


class Batcher:
    """Serialises inference and batches the requests that wait at the same time."""

    def __init__(
        self, run: Callable[[np.ndarray], torch.Tensor], max_batch: int, window_s: float
    ) -> None:
        self.run, self.max_batch, self.window_s = run, max_batch, window_s
        self.queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = asyncio.Queue()
        self.batches = 0
        self.images = 0

    async def submit(self, image: np.ndarray) -> np.ndarray:
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await self.queue.put((image, future))
        return await future

    async def _collect(self) -> list[tuple[np.ndarray, asyncio.Future[np.ndarray]]]:
        items = [await self.queue.get()]
        deadline = asyncio.get_running_loop().time() + self.window_s
        while len(items) < self.max_batch:
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                if remaining <= 0:
                    items.append(self.queue.get_nowait())
                else:
                    items.append(await asyncio.wait_for(self.queue.get(), remaining))
            # asyncio.TimeoutError: what wait_for raises; the built-in TimeoutError only
            # from Python 3.11 (on 3.10 the built-in let it escape and the batcher died).
            except (asyncio.QueueEmpty, asyncio.TimeoutError):  # noqa: UP041
                break
        return items

    async def serve_forever(self) -> None:
        while True:
            items = await self._collect()
            batch = np.stack([image for image, _ in items])
            try:
                probs = (await asyncio.to_thread(self.run, batch)).numpy()
            except Exception as exc:  # a failed batch fails its requests, not the server
                logger.exception("inference failed")
                for _, future in items:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            self.images += len(items)
            for (_, future), row in zip(items, probs, strict=True):
                if not future.done():  # the client may have gone away
                    future.set_result(row)


async def _read_capped(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit``."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, _too_large(int(declared), limit))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, _too_large(size, limit))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> str:
    return (
        f"upload of {size / 1e6:.1f} MB or more is larger than the {limit / 1e6:.1f} MB limit "
        "(--max-upload-mb)"
    )


async def _image_bytes(request: Request, limit: int) -> bytes:
    """The uploaded file: a multipart field (``file`` or the only file) or the raw body."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        return await _read_capped(request, limit)
    body = await _read_capped(request, limit + MULTIPART_OVERHEAD)

    async def replay() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=8)
    except Exception as exc:  # malformed multipart bodies raise parser-specific errors
        raise HTTPException(422, f"malformed multipart body ({exc})") from exc
    files = [v for v in form.values() if isinstance(v, UploadFile)]
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        upload = files[0] if len(files) == 1 else None
    if upload is None:
        raise HTTPException(
            422, "no file in the form; send the image as a field named 'file' or as the body"
        )
    data = await upload.read()
    if len(data) > limit:
        raise HTTPException(413, _too_large(len(data), limit))
    return data


def decode_upload(data: bytes, backend: Backend, max_pixels: int) -> np.ndarray:
    """Bytes -> the uint8 base image; HTTP errors for what is not a usable image."""
    if not data:
        raise HTTPException(422, "empty upload (0 bytes); send an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:  # reads the header only
                width, height = probe.size
    except Image.DecompressionBombError as exc:
        raise HTTPException(413, f"image has too many pixels ({exc})") from exc
    except UnidentifiedImageError:
        raise HTTPException(
            415, "not an image file; send JPEG, PNG, WebP, BMP, GIF or TIFF"
        ) from None
    except Exception as exc:
        raise HTTPException(422, f"corrupt image header ({exc})") from exc
    if width * height > max_pixels:
        raise HTTPException(
            413,
            f"image is {width}x{height} = {width * height / 1e6:.0f} megapixels; the limit is "
            f"{max_pixels / 1e6:.0f} (--max-pixels)",
        )
    try:
        return to_base(load_image_bytes(data), backend.preprocessing)
    except ImageReadError as exc:
        raise HTTPException(422, f"cannot read the image: {exc}") from exc


_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def _ranked(backend: Backend, probs: np.ndarray, k: int, shown: list[str]) -> list[dict[str, Any]]:
    """Best first: ``label`` (the folder name, the key tools use), ``display`` (the name
    people read) and the probability."""
    order = np.argsort(-probs, kind="stable")[: max(1, min(k, len(probs)))]
    return [
        {
            "label": backend.class_names[i],
            "display": shown[i],
            "probability": round(float(probs[i]), 6),
        }
        for i in order
    ]


def create_app(backend: Backend, config: ServeConfig | None = None) -> FastAPI:
    """A FastAPI app serving ``backend`` with the limits of ``config``."""
    cfg = config or ServeConfig()
    shown = display_names(backend.meta)
    batcher = Batcher(
        lambda batch: backend.predict(batch, cfg.tta), cfg.max_batch, cfg.batch_window_ms / 1000
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        worker = asyncio.create_task(batcher.serve_forever())
        try:
            yield
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    app = FastAPI(
        title="transferlab",
        version=__version__,
        description=f"{backend.architecture} image classifier over "
        f"{len(backend.class_names)} classes. POST an image to /predict.",
        lifespan=lifespan,
    )

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error")
        return JSONResponse({"detail": f"internal error: {exc.__class__.__name__}"}, 500)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return INDEX_HTML

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": backend.architecture, "backend": backend.name}

    @app.get("/model")
    async def model() -> dict[str, Any]:
        return {
            **backend.describe(),
            "display_names": shown,
            "tta": cfg.tta,
            "limits": asdict(cfg),
            "served": {"batches": batcher.batches, "images": batcher.images},
        }

    @app.post("/predict", openapi_extra=_PREDICT_BODY)
    async def predict(
        request: Request,
        top_k: int = Query(cfg.top_k, ge=1, le=1000, description="How many classes to return."),
        reject_below: float | None = Query(
            None, ge=0, le=1, description="Answer 'unknown' below this top probability."
        ),
    ) -> dict[str, Any]:
        """Classify one image: labels and probabilities, best first; ``label`` is ``unknown``
        (and ``rejected`` true) when the top probability is below the reject threshold."""
        started = time.perf_counter()
        data = await _image_bytes(request, cfg.max_upload_bytes)
        image = await run_in_threadpool(decode_upload, data, backend, cfg.max_pixels)
        probs = await batcher.submit(image)
        threshold = next(
            (t for t in (reject_below, cfg.reject_below, backend.reject_below) if t is not None),
            None,
        )
        rejected = is_rejected(float(probs.max()), threshold)
        ranked = _ranked(backend, probs, top_k, shown)
        return {
            "label": UNKNOWN if rejected else ranked[0]["label"],
            "display": UNKNOWN if rejected else ranked[0]["display"],
            "probability": ranked[0]["probability"],
            "top_k": ranked,
            "rejected": rejected,
            "model": backend.architecture,
            "backend": backend.name,
            "milliseconds": round((time.perf_counter() - started) * 1000, 2),
        }

    return app
