"""`digitrec serve`: the digit recogniser over HTTP, with a page to draw digits on.

    digitrec serve [--ckpt PATH] [--host 127.0.0.1] [--port 8000] [--collect DIR]

GET / is the draw-a-digit page, POST /predict reads images, GET /health and GET /model describe the
server, GET /docs is the OpenAPI page. With --collect DIR, POST /collect?digit=N saves an image into
DIR/N/ (the page's "save as digit N"), to fine-tune on later (data=folder); without it, it refuses. Every image goes through `digitrec.inference.preprocess.preprocess` and
`digitrec.inference.predict.Predictor`, the code of `digitrec predict`: page, API and CLI give the same answer.

Like `digitrec predict`, this never imports Lightning, Hydra or torchvision: start-up stays lean.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import io
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from digitrec.errors import EXIT_USER_ERROR, DigitrecError, first_line
from digitrec.tracking import record

try:
    import python_multipart  # noqa: F401  (Starlette reads multipart bodies with it)
    import uvicorn
    from fastapi import FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from fastapi_offline import FastAPIOffline
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException
except ImportError as err:  # the server is an extra: `digitrec predict` and training do without it
    raise DigitrecError(f"digitrec serve needs {err.name}: pip install 'digitrec[serve]' (make install includes it)") from None

from digitrec.inference.predict import RUNS_ROOT, Prediction, Predictor, add_net_class_option, newest_run_checkpoint
from digitrec.inference.preprocess import preprocess
from digitrec.nets.checkpoint import load_checkpoint
from digitrec.nets.networks import describe_net, net_from_checkpoint

# Limits, checked before anything is decoded: the body's size as it arrives, each image's size in
# bytes, the number of images; each image's pixel count is checked from its header by `preprocess`.
MAX_BODY_BYTES = 25_000_000
MAX_IMAGE_BYTES = 10_000_000
MAX_IMAGES = 64
# Images through the model in one forward pass at most; more wait for the next pass.
MAX_BATCH = 256
PAGE = "index.html"
# A malformed multipart body is answered with one sentence; the parser's own log line would be noise.
logging.getLogger("python_multipart").setLevel(logging.ERROR)


class RequestError(Exception):
    """A request the server cannot answer: its HTTP status and one sentence saying why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Upload:
    name: str
    data: bytes


class MicroBatcher:
    """Images of concurrent requests through the model together, one forward pass per batch.

    No waiting window: a lone request goes through at once, and whatever arrives while the model
    is busy forms the next batch, so batches grow exactly as fast as the load does.
    """

    def __init__(self, classify: Callable[[np.ndarray], list[Prediction]], max_batch: int = MAX_BATCH) -> None:
        self.classify, self.max_batch = classify, max_batch
        self.queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future]] = asyncio.Queue()
        # One thread owns the model: forward passes never overlap, and the event loop stays free.
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="digitrec-model")
        self.images = self.passes = 0

    async def predict(self, image: np.ndarray) -> Prediction:
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((image, future))
        return await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            try:
                predictions = await loop.run_in_executor(self.executor, self.classify, np.stack([image for image, _ in batch]))
            except Exception as err:  # noqa: BLE001 - the requests of this batch get the error, the server goes on
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            self.images += len(batch)
            self.passes += 1
            for (_, future), prediction in zip(batch, predictions):
                if not future.done():  # a client that went away cancels its future
                    future.set_result(prediction)


class DigitService:
    """The loaded model and what the endpoints need around it."""

    def __init__(self, predictor: Predictor, checkpoint: Path, hyper_parameters: dict[str, Any], collect: Path | None = None) -> None:
        self.predictor, self.checkpoint, self.hyper_parameters = predictor, checkpoint, hyper_parameters
        # --collect DIR: where "save as digit N" writes (DIR/N/); None: saving is refused.
        self.collect = collect
        self.num_classes = int(hyper_parameters["net"].get("num_classes", 10))
        self.batcher = MicroBatcher(lambda images: predictor.classify(images, top_k=self.num_classes))
        self.preprocessing = ThreadPoolExecutor(min(4, os.cpu_count() or 1), thread_name_prefix="digitrec-preprocess")
        self.spool: Path | None = None  # made when serving starts, removed when it stops
        self.model_info = {**describe_model(predictor, checkpoint, hyper_parameters), "collect": collect is not None}

    @classmethod
    def from_checkpoint(cls, path: Path, trusted: Sequence[str] = (), collect: Path | None = None) -> DigitService:
        checkpoint = load_checkpoint(path)
        return cls(Predictor(net_from_checkpoint(checkpoint, path, trusted)), path, checkpoint["hyper_parameters"], collect)

    def open(self) -> None:
        self.spool = Path(tempfile.mkdtemp(prefix="digitrec-serve-", dir=memory_tmpdir()))

    def close(self) -> None:
        self.batcher.executor.shutdown(wait=False, cancel_futures=True)
        self.preprocessing.shutdown(wait=False, cancel_futures=True)
        if self.spool:
            shutil.rmtree(self.spool, ignore_errors=True)

    def prepare(self, upload: Upload) -> np.ndarray:
        """The 28x28 image the model reads, made from the upload's bytes as a file on disk.

        Written to a file and read back by path so that the decoding, EXIF orientation and
        reduced-size JPEG decoding are those of `digitrec predict` for the same file. The
        folder is in memory (/dev/shm) where there is one.
        """
        with tempfile.NamedTemporaryFile(dir=self.spool, prefix="upload-") as file:
            file.write(upload.data)
            file.flush()
            return preprocess(file.name)

    def save(self, upload: Upload, digit: int) -> Path:
        """Keep an image as an example of `digit`: DIR/digit/<time>-<random>.<its format's extension>.

        The name is made here, never taken from the request (no path can be smuggled in), and the
        image must be one preprocessing reads as holding a digit, so the folder trains as it is."""
        self.prepare(upload)  # raises DigitrecError, one line, for what training could not use
        with Image.open(io.BytesIO(upload.data)) as image:
            extension = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "BMP": "bmp", "TIFF": "tif", "WEBP": "webp"}.get(image.format or "", "img")
        folder = self.collect / str(digit)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}.{extension}"
        temp = folder / f".{path.name}.tmp"  # hidden (training skips it) until complete, then renamed
        with os.fdopen(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), "wb") as f:
            f.write(upload.data)
        os.replace(temp, path)
        return path

    async def predict(self, uploads: list[Upload], top_k: int, with_image: bool) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(self.predict_one(upload, top_k, with_image) for upload in uploads)))

    async def predict_one(self, upload: Upload, top_k: int, with_image: bool) -> dict[str, Any]:
        result: dict[str, Any] = {"name": upload.name}
        if len(upload.data) > MAX_IMAGE_BYTES:
            result["error"] = f"the image is {len(upload.data) / 1e6:.1f} MB: at most {MAX_IMAGE_BYTES // 1_000_000} MB per image"
            return result
        try:
            image = await asyncio.get_running_loop().run_in_executor(self.preprocessing, self.prepare, upload)
        except DigitrecError as err:
            result["error"] = str(err)
            return result
        except Exception as err:  # noqa: BLE001 - as in `digitrec predict`: an odd file gets its own error
            result["error"] = f"could not be processed ({type(err).__name__}: {first_line(err, 120, fallback='')})"
            return result
        prediction = await self.batcher.predict(image)
        result.update(digit=prediction.digit, probability=round(prediction.probability, 4))
        result["top_k"] = [{"digit": d, "probability": round(q, 4)} for d, q in prediction.top_k[:top_k]]
        if with_image:
            result["preprocessed"] = png_base64(prediction.image)
        return result


def memory_tmpdir() -> str | None:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def png_base64(image: np.ndarray) -> str:
    """A (28, 28) image in [0, 1] as base64 PNG, converted as `predict --save-preprocessed` does."""
    buffer = io.BytesIO()
    Image.fromarray(np.round(image * 255).astype(np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def describe_model(predictor: Predictor, checkpoint: Path, hp: dict[str, Any]) -> dict[str, Any]:
    accuracy, source = tested_accuracy(checkpoint)
    return {
        "architecture": describe_net(hp["net"]),
        "net": hp["net"],
        "num_classes": int(hp["net"].get("num_classes", 10)),
        "parameters": sum(p.numel() for p in predictor.net.parameters()),
        "checkpoint": str(checkpoint.resolve()),
        "test_accuracy": accuracy,
        "test_accuracy_from": source,
    }


def tested_accuracy(checkpoint: Path) -> tuple[float | None, str | None]:
    """test/acc from the metrics.json of the run this checkpoint is the tested model of, if any.

    A run tests its best checkpoint and exports those weights as model.ckpt; its other
    checkpoints (last.ckpt, other epochs) were not tested, so they have no known accuracy.
    """
    checkpoint = checkpoint.resolve()
    for run_dir in (checkpoint.parent, checkpoint.parent.parent):
        metrics = record.read_record(run_dir)
        accuracy = record.objective_value(metrics, record.TEST_ACC)
        if metrics is None or accuracy is None:
            continue
        accuracy = round(accuracy, 6)  # logged as float32: 0.9779999852 is 0.978
        tested = {run_dir / "model.ckpt"}
        for key in (record.MODEL_PATH, record.BEST_CKPT_PATH):
            if isinstance(metrics.get(key), str) and metrics[key]:
                tested |= {Path(metrics[key]).resolve(), run_dir / "checkpoints" / Path(metrics[key]).name}
        if checkpoint in tested:
            return accuracy, str(record.path(run_dir))
    return None, None


# --- requests ----------------------------------------------------------------------------------


async def read_body(request: Request) -> bytes:
    """The request body, refused as soon as it is known to exceed MAX_BODY_BYTES."""
    too_large = RequestError(413, f"the request is larger than {MAX_BODY_BYTES // 1_000_000} MB: send fewer or smaller images")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def multipart_uploads(request: Request, body: bytes) -> list[Upload]:
    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    uploads = []
    try:
        # The body's size is already bounded; the image count is checked by the caller, with its own message.
        async with Request(request.scope, replay).form() as form:
            for field, value in form.multi_items():
                if not isinstance(value, UploadFile):
                    raise RequestError(400, f"the form field {field!r} is text, not a file: upload files, e.g. curl -F image=@digit.png")
                uploads.append(Upload(value.filename or field, await value.read()))
    except HTTPException as err:  # Starlette's parser found the body malformed
        raise RequestError(400, f"the multipart body cannot be read ({err.detail}): send files as curl -F image=@digit.png does") from None
    return uploads


def json_uploads(body: bytes) -> list[Upload]:
    hint = 'send {"images": ["<base64 image>", ...]} or {"image": "<base64 image>"}'
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise RequestError(400, f"the body is not valid JSON: {hint}") from None
    if isinstance(document, dict) and isinstance(document.get("image"), str) and "images" not in document:
        encoded = [document["image"]]
    elif isinstance(document, dict) and isinstance(document.get("images"), list):
        encoded = document["images"]
    else:
        raise RequestError(400, f"the JSON body has no images: {hint}")
    if len(encoded) > MAX_IMAGES:
        raise too_many_images(len(encoded))
    uploads = []
    for index, text in enumerate(encoded):
        if not isinstance(text, str):
            raise RequestError(400, f"images[{index}] is not a string: {hint}")
        # A data URL (what a browser's canvas.toDataURL gives) carries the base64 after the comma.
        if text.startswith("data:"):
            text = text.partition(",")[2]
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(400, f"images[{index}] is not valid base64: {hint}") from None
        uploads.append(Upload(f"image {index}", data))
    return uploads


def too_many_images(count: int) -> RequestError:
    return RequestError(413, f"the request holds {count} images: at most {MAX_IMAGES} per request")


async def request_uploads(request: Request) -> list[Upload]:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in ("multipart/form-data", "application/json"):
        got = f"content type {media_type!r}" if media_type else "no content type"
        raise RequestError(
            415,
            f'the request has {got}: send images as multipart/form-data (curl -F image=@digit.png) or as JSON {{"images": ["<base64 image>", ...]}}',
        )
    body = await read_body(request)
    uploads = await multipart_uploads(request, body) if media_type == "multipart/form-data" else json_uploads(body)
    if not uploads:
        raise RequestError(400, "the request holds no image: send at least one (curl -F image=@digit.png)")
    if len(uploads) > MAX_IMAGES:
        raise too_many_images(len(uploads))
    return uploads


def failure_sentence(results: list[dict[str, Any]]) -> str:
    failed = [r for r in results if "error" in r]
    first = f"{failed[0]['name']}: {failed[0]['error']}"
    if len(results) == 1:
        return first
    return f"{len(failed)} of {len(results)} images could not be read (first: {first}); each image's outcome is in results"


# --- the app -----------------------------------------------------------------------------------

REQUEST_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"image": {"type": "array", "items": {"type": "string", "format": "binary"}}},
            }
        },
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"images": {"type": "array", "items": {"type": "string", "description": "a base64 image or data URL"}}},
            },
            "example": {"images": ["iVBORw0KGgo..."]},
        },
    },
}


def create_app(service: DigitService) -> FastAPI:
    page = resources.files("digitrec.inference").joinpath("static", PAGE).read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(_app):
        service.open()
        batcher = asyncio.create_task(service.batcher.run())
        try:
            yield
        finally:
            batcher.cancel()
            service.close()

    # FastAPIOffline: the /docs page with Swagger UI's files served from the package, not a CDN.
    app = FastAPIOffline(
        title="digitrec",
        summary="Handwritten digit recognition: the trained network behind `digitrec predict`, over HTTP.",
        version="1",
        lifespan=lifespan,
    )

    @app.exception_handler(RequestError)
    async def request_error(_request, err: RequestError):
        return JSONResponse({"error": err.message}, status_code=err.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        message = str(err.detail)
        if err.status_code == 404:
            message = f"there is no {request.url.path}: the page is at /, the API at POST /predict, GET /health, GET /model (see /docs)"
        elif err.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}: see /docs"
        return JSONResponse({"error": message}, status_code=err.status_code, headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request, err: RequestValidationError):
        problem = err.errors()[0]
        where = ".".join(str(part) for part in problem.get("loc", ())[1:]) or "request"
        return JSONResponse({"error": f"{where}: {problem.get('msg', 'invalid value')}"}, status_code=400)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health", summary="Whether the server answers, and how much it has done")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "images": service.batcher.images, "forward_passes": service.batcher.passes}

    @app.get("/model", summary="The model being served: architecture, checkpoint, test accuracy if known")
    async def model() -> dict[str, Any]:
        return service.model_info

    @app.post(
        "/predict",
        summary="The digit in each image",
        description=(
            "One or several images, as multipart files (any field name) or as JSON "
            '`{"images": [base64, ...]}`. Answers `{"results": [...]}` in the order sent, each with '
            "`name`, `digit`, `probability` and `top_k`, or an `error`. 200 when every image was read, "
            "422 when any could not be (with `error` and every image's outcome in `results`)."
        ),
        openapi_extra={"requestBody": REQUEST_BODY},
    )
    async def predict(
        request: Request,
        top_k: int = Query(3, ge=1, le=service.num_classes, description="how many of the most likely digits to list"),
        preprocessed: bool = Query(False, description="add the 28x28 image the model saw, as base64 PNG"),
    ):
        uploads = await request_uploads(request)
        results = await service.predict(uploads, top_k, preprocessed)
        if any("error" in r for r in results):
            return JSONResponse({"error": failure_sentence(results), "results": results}, status_code=422)
        return {"results": results}

    @app.post(
        "/collect",
        summary="Save an image as an example of a digit (only with digitrec serve --collect DIR)",
        description=(
            "One image (multipart file or JSON base64, as /predict) and `?digit=N`: written into DIR/N/ under a "
            "name the server makes. Answers `{saved, digit, count}` (count: the images of that digit now there). "
            "403 when the server was started without --collect; 422 when the image holds no readable digit."
        ),
        openapi_extra={"requestBody": REQUEST_BODY},
    )
    async def collect(request: Request, digit: int = Query(..., ge=0, le=9, description="the digit the image shows")):
        if service.collect is None:
            raise RequestError(
                403, "saving images is off: start the server with digitrec serve --collect DIR to collect digits into DIR/0/ ... DIR/9/"
            )
        uploads = await request_uploads(request)
        if len(uploads) != 1:
            raise RequestError(400, f"the request holds {len(uploads)} images: save one at a time")
        upload = uploads[0]
        if len(upload.data) > MAX_IMAGE_BYTES:
            raise RequestError(413, f"the image is {len(upload.data) / 1e6:.1f} MB: at most {MAX_IMAGE_BYTES // 1_000_000} MB per image")
        try:
            path = await asyncio.get_running_loop().run_in_executor(service.preprocessing, service.save, upload, digit)
        except DigitrecError as err:
            raise RequestError(422, f"{upload.name}: {err}: not saved") from None
        count = sum(1 for p in path.parent.iterdir() if p.is_file() and not p.name.startswith("."))
        return {"saved": str(path.relative_to(service.collect)), "digit": digit, "count": count}

    return app


# --- the command line --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digitrec serve",
        description="Serve the digit recogniser: a page to draw or upload digits at /, and an HTTP API (POST /predict, /docs).",
    )
    parser.add_argument(
        "--ckpt",
        metavar="PATH",
        help="model to serve: a Lightning checkpoint or an exported model.ckpt (default: as `digitrec predict`, "
        "the best checkpoint of the newest run under outputs/)",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 opens it to the network)",
    )
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000; 0 picks a free one)")
    parser.add_argument(
        "--collect",
        metavar="DIR",
        type=Path,
        help='let the page save drawn or uploaded digits into DIR/0/ ... DIR/9/ ("save as digit N"; POST /collect), '
        "a folder to fine-tune on: digitrec train data=folder data.root=DIR init_from=... (default: off)",
    )
    add_net_class_option(parser)
    return parser


def collect_folder(folder: Path) -> Path:
    """The --collect folder, made if missing; one line if it cannot be written."""
    folder = folder.expanduser().resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".digitrec-write-check-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise DigitrecError(f"--collect {folder}: cannot write there ({err.strerror or err}): choose a folder you can write to") from None
    return folder


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, bound here so that a taken port is one line, not a server's traceback."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as err:
        raise DigitrecError(f"cannot listen on {host}:{port}: {err.strerror or err}; choose another --port or --host") from None
    sock.set_inheritable(True)
    return sock


def is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
    except (OSError, ValueError):
        return False


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def main(argv: list[str]) -> int:
    """`digitrec serve ...`: serves until Ctrl-C or SIGTERM, then exits 0; 2 for usage errors."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:
        return int(exit.code or 0)
    if not 0 <= args.port <= 65535:
        parser.print_usage(sys.stderr)
        print(f"digitrec serve: error: --port must be between 0 and 65535, not {args.port}", file=sys.stderr)
        return EXIT_USER_ERROR
    # Forward passes are a fraction of a millisecond: one thread, and the other cores preprocess.
    torch.set_num_threads(1)
    ckpt = Path(args.ckpt) if args.ckpt else newest_run_checkpoint()
    if not args.ckpt:
        print(f"digitrec serve: using {ckpt}, from the newest run under {RUNS_ROOT}/ (--ckpt PATH to choose)", file=sys.stderr)
    collect = collect_folder(args.collect) if args.collect else None
    service = DigitService.from_checkpoint(ckpt, args.net_class, collect)
    sock = listen(args.host, args.port)
    if not is_loopback(args.host):
        print(f"digitrec serve: listening on {args.host}: reachable from other machines, with no authentication", file=sys.stderr)
    print(
        f"digitrec serve: {service.model_info['architecture']} at {url_of(sock)} (API docs: {url_of(sock)}docs; Ctrl-C to stop)",
        file=sys.stderr,
        flush=True,
    )
    if collect:
        print(f'digitrec serve: the page saves digits into {collect}/0/ ... 9/ ("save as digit N")', file=sys.stderr, flush=True)

    config = uvicorn.Config(create_app(service), log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    # uvicorn stops gracefully on SIGINT/SIGTERM, then raises the same signal again for the handler
    # that was there before it: make that handler a no-op, so a requested stop is a clean exit 0.
    stop_signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in stop_signals}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    if not server.started:
        raise DigitrecError("the server did not start (see the message above)")
    print("digitrec serve: stopped", file=sys.stderr)
    return 0
