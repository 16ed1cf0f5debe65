"""The HTTP API and web page of `srkit serve`: upload an image, get the upscaled PNG back.

Every error is JSON `{"detail": "..."}` naming the limit or the input that was refused, so the page (and curl)
can show it as is.
"""

from __future__ import annotations

import asyncio
import functools
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Annotated, Any
from urllib.parse import quote

import torch
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from srkit import __version__, image_io
from srkit.descriptor import ModelDescriptor, open_model
from srkit.face_upscale import upscale_with_faces
from srkit.inference import TILE, TileOptions, upscale_image
from srkit.models import available_models, describe_shipped, resolve_model
from srkit.serve.jobs import Abandoned, Busy, Cancelled, JobRunner, JobTimeout, ModelCache, ModelLoader
from srkit.serve.limits import MAX_JOBS, MAX_PIXELS, MAX_QUEUE, MAX_UPLOAD_BYTES, MB, TIMEOUT_S

# Multipart framing around the file (boundaries, part headers, the model and tile fields) allowed on top of
# max_upload_bytes before the body is cut off; the file itself is then checked against max_upload_bytes exactly.
FORM_OVERHEAD_BYTES = 64 * 1024
# Tiles smaller than 64 could not hold the default overlap of 32 (overlap <= tile / 2); larger than 1024 would let
# a client ask for a whole large image in one forward pass.
TILE_RANGE = (64, 1024)
# Not a standard code (nginx's "client closed request"): the status an abandoned upscale ends with; no client sees
# it, but tests and middleware can.
CLIENT_CLOSED_REQUEST = 499
STATIC_DIR = Path(__file__).parent / "static"

_ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Any]


class Health(BaseModel):
    """GET /api/health."""

    status: str
    version: str
    device: str
    jobs_running: int
    jobs_waiting: int
    jobs_abandoned: int  # since start: clients that hung up before their upscale ended (the job was stopped)
    max_jobs: int
    max_queue: int
    max_upload_bytes: int
    max_pixels: int
    timeout_s: float


class ModelInfo(BaseModel):
    """One entry of GET /api/models."""

    name: str
    scale: int
    params: int
    description: str
    domain: str  # natural | faces | any: what the model was trained on ("faces": offer it for face windows)


@dataclass(frozen=True)
class _Upscaled:
    """What a job hands back to the request: the encoded PNG and the sizes."""

    png: bytes
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    scale: int
    faces: str = ""  # with a face model: "N found, M by the face model"


def create_app(
    *,
    models: list[str] | None = None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_PIXELS,
    max_jobs: int = MAX_JOBS,
    max_queue: int = MAX_QUEUE,
    timeout_s: float = TIMEOUT_S,
    device: str | torch.device = "cpu",
    model_loader: ModelLoader | None = None,
) -> FastAPI:
    """The FastAPI app: /api/health, /api/models, /api/upscale, the page at /, docs at /docs.

    Args:
        models: names offered to clients (default: every model `srkit models` lists).
        max_pixels: largest input (width x height), checked from the image header before decoding.
        max_jobs / max_queue: upscales running at once / waiting for a worker; more get 503.
        timeout_s: longest a request waits for and runs its upscale before it gets 504.
        model_loader: name -> model in eval mode (default: srkit.descriptor.open_model on `device`); for tests.
    """
    if max_upload_bytes < 1:
        raise ValueError(f"max_upload_bytes must be >= 1, got {max_upload_bytes}")
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s}")
    device = torch.device(device)
    names = list(models) if models is not None else available_models()
    if not names:
        raise ValueError("srkit serve needs at least one model to offer, got an empty list")
    runner = JobRunner(max_jobs=max_jobs, max_queue=max_queue)  # checks max_jobs and max_queue
    if model_loader is None:
        _check_models(names)
        cache = ModelCache(functools.partial(open_model, device=device))
        # Every offered model is loaded now: a bad one (foreign or corrupt file, weights that do not fit their
        # arch) stops the server before it listens, instead of a 500 on every request that picks it.
        _preload(cache, names)
    else:
        cache = ModelCache(model_loader)

    server = _Server(names, cache, runner, device, max_upload_bytes, max_pixels, timeout_s)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        runner.close()  # on shutdown: running jobs stop at their next tile, waiting ones never start

    app = FastAPI(
        title="srkit",
        version=__version__,
        description="4x super-resolution: upload an image, get the upscaled PNG. Errors are JSON {detail}.",
        lifespan=lifespan,
    )
    app.add_middleware(
        _BodyLimit, max_body_bytes=max_upload_bytes + FORM_OVERHEAD_BYTES, limit_text=_mb(max_upload_bytes)
    )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default detail is a list of dicts; one readable line keeps every error {"detail": str}.
        return JSONResponse(status_code=422, content={"detail": _validation_text(exc)})

    @app.get("/api/health", response_model=Health)
    async def health() -> Health:
        """Liveness plus how busy the server is and its limits."""
        return _health(server)

    @app.get("/api/models", response_model=list[ModelInfo])
    def list_models() -> list[ModelInfo]:
        """The models a client may pick; each is loaded (once, then cached) to report its scale and size."""
        # A plain def: FastAPI runs it on a worker thread, so a first load does not block the event loop.
        return _model_infos(server)

    @app.post(
        "/api/upscale",
        response_class=Response,
        responses={
            200: {"content": {"image/png": {}}, "description": "the upscaled image, PNG (16-bit and alpha kept)"},
            400: {"description": "the upload is not a readable image"},
            413: {"description": "the upload has too many bytes or pixels"},
            422: {"description": "unknown model or bad tile size"},
            503: {"description": "all workers busy and the queue full; see Retry-After"},
            504: {"description": "the upscale took longer than the server's timeout"},
        },
    )
    async def upscale(
        request: Request,
        file: Annotated[UploadFile, File(description="the image to upscale (PNG, JPEG, WebP, BMP or TIFF)")],
        model: Annotated[str | None, Form(description="a name from /api/models (default: the first)")] = None,
        tile: Annotated[int | None, Form(description=f"LR tile side in pixels, {TILE_RANGE} (default {TILE})")] = None,
        face_model: Annotated[
            str | None,
            Form(description="a name from /api/models: upscale detected faces with it, blended into the result"),
        ] = None,
    ) -> Response:
        """Upscale one image; the body is the PNG, headers X-Output-Width/-Height and X-Elapsed-Seconds."""
        return await _upscale_request(server, request, file, model=model, tile=tile, face_model=face_model)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


@dataclass(frozen=True)
class _Server:
    """What the endpoints share: the offered models and their cache, the job runner, the device and limits."""

    names: list[str]
    cache: ModelCache
    runner: JobRunner
    device: torch.device
    max_upload_bytes: int
    max_pixels: int
    timeout_s: float


def _health(server: _Server) -> Health:
    running, waiting = server.runner.counts()
    return Health(
        status="ok",
        version=__version__,
        device=str(server.device),
        jobs_running=running,
        jobs_waiting=waiting,
        jobs_abandoned=server.runner.abandoned,
        max_jobs=server.runner.max_jobs,
        max_queue=server.runner.max_queue,
        max_upload_bytes=server.max_upload_bytes,
        max_pixels=server.max_pixels,
        timeout_s=server.timeout_s,
    )


def _model_infos(server: _Server) -> list[ModelInfo]:
    infos = []
    for name in server.names:
        try:
            infos.append(_describe(name, server.cache.get(name)))
        except (OSError, ValueError, RuntimeError) as err:
            raise HTTPException(500, f"model {name!r} could not be loaded: {err}") from err
    return infos


def _checked_names(server: _Server, model: str | None, face_model: str | None) -> tuple[str, str | None]:
    """The model (default: the first offered) and the face model a request asks for, both offered (else 422)."""
    names = server.names
    model_name = names[0] if model is None or model == "" else model
    if model_name not in names:
        raise HTTPException(422, f"unknown model {model_name!r}; this server offers: {', '.join(names)}")
    face = None if face_model == "" else face_model
    if face is not None and face not in names:
        raise HTTPException(422, f"unknown face_model {face!r}; this server offers: {', '.join(names)}")
    return model_name, face


async def _read_upload(server: _Server, file: UploadFile) -> tuple[str, bytes, int, int]:
    """(file name, bytes, width, height) of an upload within the byte and pixel limits (else 413, or 400)."""
    filename = file.filename or "upload"
    limit = server.max_upload_bytes
    # At most one byte past the limit is read: enough to know the file is too large, never unbounded.
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"upload {filename!r} is larger than max_upload_bytes = {_mb(limit)}")
    try:
        # The header alone, before any pixel is decoded: a small file can declare a huge image.
        width, height = image_io.image_size(data, name=filename)
    except image_io.ImageTooLargeError as err:
        raise HTTPException(413, f"{err}; this server accepts at most max_pixels = {server.max_pixels}") from err
    except image_io.ImageReadError as err:
        raise HTTPException(400, str(err)) from err
    if width * height > server.max_pixels:
        raise HTTPException(
            413,
            f"image {filename!r} is {width}x{height} = {width * height} pixels, "
            f"more than max_pixels = {server.max_pixels}",
        )
    return filename, data, width, height


async def _upscale_request(
    server: _Server,
    request: Request,
    file: UploadFile,
    *,
    model: str | None,
    tile: int | None,
    face_model: str | None,
) -> Response:
    """POST /api/upscale: check the request, queue the upscale, turn each way it can end into a status."""
    model_name, face_model = _checked_names(server, model, face_model)
    if tile is not None and not TILE_RANGE[0] <= tile <= TILE_RANGE[1]:
        raise HTTPException(422, f"tile must be in {TILE_RANGE[0]}..{TILE_RANGE[1]} LR pixels, got {tile}")
    filename, data, width, height = await _read_upload(server, file)
    options = TileOptions(tile=TILE if tile is None else tile)
    cache, runner = server.cache, server.runner

    def work(cancel: threading.Event) -> _Upscaled:
        face_net = cache.get(face_model) if face_model is not None else None
        return _upscale_bytes(
            data,
            filename=filename,
            net=cache.get(model_name),
            device=server.device,
            options=options,
            cancel=cancel,
            face_net=face_net,
        )

    try:
        job = await runner.run(work, timeout_s=server.timeout_s, gone=functools.partial(_client_gone, request))
    except Abandoned as err:
        # Nobody will read this reply; the job stops at its next tile and its worker takes the next request.
        raise HTTPException(
            CLIENT_CLOSED_REQUEST,
            f"the client closed the connection before upscaling {filename!r} finished; the upscale was cancelled",
        ) from err
    except Busy as err:
        raise HTTPException(
            503,
            f"server busy: {err.running} upscale(s) running and {err.waiting} waiting "
            f"(max_jobs = {runner.max_jobs}, max_queue = {runner.max_queue}); retry in {err.retry_after_s} s",
            headers={"Retry-After": str(err.retry_after_s)},
        ) from err
    except JobTimeout as err:
        raise HTTPException(
            504,
            f"upscaling {filename!r} ({width}x{height}) with {model_name!r} took longer than "
            f"timeout_s = {server.timeout_s:g} s; try a smaller image or a faster model",
        ) from err
    except Cancelled as err:
        # Raised at a checkpoint after runner.close(): the server is shutting down.
        raise HTTPException(503, f"upscaling {filename!r} was cancelled: the server is shutting down") from err
    except image_io.ImageTooLargeError as err:
        raise HTTPException(413, str(err)) from err
    except image_io.ImageReadError as err:
        raise HTTPException(400, str(err)) from err
    except (OSError, ValueError, RuntimeError) as err:
        # A model that fails to load or run (bad weights, wrong output shape, out of memory): say what broke.
        raise HTTPException(500, f"upscaling {filename!r} with {model_name!r} failed: {err}") from err
    result = job.value
    out_name = _result_filename(filename, scale=result.scale, model=model_name)
    return Response(
        content=result.png,
        media_type="image/png",
        headers={
            "Content-Disposition": _content_disposition(out_name),
            "X-Model": model_name,
            "X-Scale": str(result.scale),
            "X-Input-Width": str(result.input_size[0]),
            "X-Input-Height": str(result.input_size[1]),
            "X-Output-Width": str(result.output_size[0]),
            "X-Output-Height": str(result.output_size[1]),
            "X-Elapsed-Seconds": f"{job.run_s:.3f}",
            "X-Queue-Seconds": f"{job.wait_s:.3f}",
            **({"X-Faces": result.faces, "X-Face-Model": str(face_model)} if face_model else {}),
        },
    )


def _upscale_bytes(
    data: bytes,
    *,
    filename: str,
    net: ModelDescriptor,
    device: torch.device,
    options: TileOptions,
    cancel: threading.Event,
    face_net: ModelDescriptor | None = None,
) -> _Upscaled:
    """Decode, upscale and encode as PNG on a worker thread, the path `srkit upscale` takes for a file."""

    def checkpoint(_done: int = 0, _total: int = 0) -> None:
        if cancel.is_set():
            raise Cancelled()  # the request gave up (timeout or disconnect): free the worker

    image = image_io.decode_image(data, name=filename)
    checkpoint()
    faces = ""
    if face_net is not None:
        blended = upscale_with_faces(net, face_net, image, device=device, options=options, progress=checkpoint)
        result = blended.image
        faces = f"{len(blended.regions)} found, {blended.faces_used} by the face model"
    else:
        result = upscale_image(net, image, device=device, options=options, progress=checkpoint)
    checkpoint()
    png = image_io.encode_image(
        result.rgb, suffix=".png", alpha=result.alpha, bit_depth=result.bit_depth, grayscale=result.grayscale
    )
    return _Upscaled(png, input_size=image.size, output_size=result.size, scale=net.scale, faces=faces)


async def _client_gone(request: Request) -> None:
    """Return once the client has closed its connection (the server's http.disconnect message)."""
    # The endpoint has read the whole body, so the next message the server has for this request is
    # http.disconnect, sent as soon as the socket closes; waiting on receive() reacts at once, a poll of
    # request.is_disconnected() only at its next tick.
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
        # ASGI servers may wake receive() with an empty body message (uvicorn does not): do not spin on them.
        await asyncio.sleep(0.05)


def _preload(cache: ModelCache, names: list[str]) -> None:
    """Load each model into the cache; ValueError naming the model and what is wrong with it otherwise."""
    for name in names:
        try:
            cache.get(name)  # described on load: a network without an integer .scale would fail every request too
        except Exception as err:  # safetensors, torch and the arch raise assorted types for a bad file
            raise ValueError(f"model {name!r} cannot be served: {err}") from err


def _check_models(names: list[str]) -> None:
    """Fail at start-up, not at the first request, on a model name that cannot be loaded."""
    for name in names:
        try:
            source = resolve_model(name)
        except FileNotFoundError:
            known = ", ".join(available_models())
            raise ValueError(f"unknown model {name!r}; expected one of {known} or a .safetensors file") from None
        except ValueError as err:  # a file that is not srkit weights (bad header, foreign metadata)
            raise ValueError(f"model {name!r} cannot be served: {err}") from err
        if source.kind == "onnx":
            raise ValueError(f"model {name!r} is an ONNX file: the server runs PyTorch models (.safetensors)")


def _describe(name: str, net: ModelDescriptor) -> ModelInfo:
    """Name, scale, parameter count and the first line of the architecture's docstring."""
    doc = (type(net.model).__doc__ or type(net.model).__name__).strip().splitlines()[0].replace("`", "")
    domains = {info.name: info.domain for info in describe_shipped()}
    return ModelInfo(
        name=name,
        scale=net.scale,
        params=net.params,
        description=doc,
        domain=domains.get(name, "natural"),
    )


def _result_filename(upload: str, *, scale: int, model: str) -> str:
    """`<stem>_x4_<model>.png` from the upload's name (any folder part a client sent is dropped)."""
    stem = PurePosixPath(upload.replace("\\", "/")).stem or "image"
    return f"{stem}_x{scale}_{Path(model).stem}.png"


def _content_disposition(filename: str) -> str:
    """attachment; an ASCII filename for old clients plus the exact one as RFC 6266/5987 filename*."""
    ascii_name = re.sub(r"[^A-Za-z0-9._+-]+", "_", filename)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"


def _mb(nbytes: int) -> str:
    """'20 MB (20971520 bytes)': a limit in both units, so neither needs converting."""
    return f"{nbytes / MB:g} MB ({nbytes} bytes)" if nbytes >= MB else f"{nbytes} bytes"


def _validation_text(exc: RequestValidationError) -> str:
    """FastAPI's validation errors as one line: 'body.file: Field required; ...'."""
    parts = []
    for error in exc.errors():
        loc = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{loc}: {error.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


class _BodyLimit:
    """ASGI middleware: 413 for a request body over max_body_bytes, from Content-Length or counted as it arrives.

    The multipart parser would otherwise spool any amount to a temporary file before the endpoint runs.
    """

    def __init__(self, app: _ASGIApp, *, max_body_bytes: int, limit_text: str) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.limit_text = limit_text

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._refuse(scope, send, f"the request body is {int(declared)} bytes")
            return
        received = 0
        refused = False
        response_started = False

        async def limited_receive() -> Any:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes and not response_started:
                    await self._refuse(scope, send, f"the request body passed {self.max_body_bytes} bytes")
                    refused = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message: Any) -> None:
            nonlocal response_started
            if refused:
                return  # the 413 went out already; drop the app's reply to the aborted read
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not refused:
                raise

    async def _refuse(self, scope: MutableMapping[str, Any], send: Callable[[Any], Awaitable[None]], what: str) -> None:
        response = JSONResponse(
            status_code=413,
            content={"detail": f"upload too large: {what}; files may be up to max_upload_bytes = {self.limit_text}"},
            headers={"Connection": "close"},
        )
        await response(scope, _no_receive, send)


class _BodyTooLarge(Exception):
    """Raised into the app's body read after the middleware has sent its 413."""


async def _no_receive() -> Any:
    return {"type": "http.disconnect"}
