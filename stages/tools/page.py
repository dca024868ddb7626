"""Try the study in a browser: your photo against all five models, and the study itself.

    python -m stages.tools.page [--port 8050] [--host 127.0.0.1]

Run from the project root after `dvc repro` (or `dvc pull`). It loads the trained models
once, prints the page's address and serves until Ctrl-C. Two views:

- **Your photo**: upload or drop images, or pick one of the test split's images
  (data/split/images/test/). Per model: P(positive class) (named from
  data/split/classes.json, e.g. P(dog)), the label, the model's test accuracy and ECE, and
  its Grad-CAM overlay. Each file is decoded by stages/tools/predict.py's read_image, the
  pipeline's own decoding (EXIF rotation, alpha on white, CMYK, 16-bit), so the page gives
  the same probability as `python -m stages.tools.predict`.
- **The study**: the results table, the learning curves and the report's figures, read
  from metrics/ and plots/ as committed (nothing typed by hand).

Offline and private by construction: a standard-library HTTP server (no new dependency,
no pin conflict: Gradio 6 requires pillow<13, the project pins pillow 13) serves one HTML
page, one script and one style sheet from stages/tools/page/; its Content-Security-Policy
lets the browser load nothing from anywhere else. It binds 127.0.0.1 unless --host says
otherwise. A bad file (not an image, too many bytes, too many pixels) gets a message in the
page; the terminal gets at most one line per problem, never a traceback. docs/page.md.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import secrets
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
from PIL import Image

from stages.lib.images import MAX_PIXELS
from stages.lib.metrics import predicted_labels
from stages.lib.params import UserError, load_params, run_stage
from stages.lib.study import (
    DESCRIPTIONS, MODEL_NAMES, SPLIT_DIR, SUMMARY_FIGURES, TEST_METRICS, THRESHOLD, evaluate_dir, model_figure,
    model_file, read_classes, model_scores_file,
)
from stages.tools.predict import IMAGE_SUFFIXES, NOT_FOUND_HINT, load_predictor, read_image

DEFAULT_PORT = 8050
DEFAULT_MAX_UPLOAD_MB = 20.0  # a phone photo is 2-10 MB
TEST_IMAGES_DIR = SPLIT_DIR / "images" / "test"
STATIC_DIR = Path(__file__).with_name("page")
STATIC_FILES = {"/": ("index.html", "text/html"), "/page.js": ("page.js", "text/javascript"),
                "/page.css": ("page.css", "text/css")}
DRAIN_LIMIT = 1 << 30  # a refused upload larger than this is cut off, not read to its end
KEPT_INPUTS = 64  # decoded images kept for their Grad-CAM requests (oldest dropped first)
# The browser may load and send to this server only: no CDN, no font, no analytics.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; form-action 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def metrics_on_test() -> dict[str, dict]:
    """Per model its test metrics (accuracy, ci_low, ci_high, roc_auc, log_loss, ece,
    extended_accuracy; None where not measured), from `evaluate`'s DVC metrics
    (metrics/test/<model>.json); a model evaluate has not scored yet is left out."""
    found = {}
    for name in MODEL_NAMES:
        path = model_scores_file(name)
        if not path.is_file():
            continue
        try:
            scores = json.loads(path.read_text())
        except ValueError as e:
            raise UserError(f"{path} is not valid JSON ({e}): {NOT_FOUND_HINT}") from None
        found[name] = {key: scores.get(key) for key in TEST_METRICS}
    return found


def study_figures() -> list[dict]:
    """The report's figures that exist, in the study's order: the learning curves, the
    summary figures, then each model's Grad-CAM and confident errors."""
    folder = evaluate_dir()
    figures = [{"group": "Learning curves", "title": name, "path": folder / model_figure("curves", name)}
               for name in MODEL_NAMES]
    figures += [{"group": "All models", "title": kind, "path": folder / file} for kind, file in SUMMARY_FIGURES.items()]
    figures += [{"group": "Where each model looked (Grad-CAM)", "title": name,
                 "path": folder / model_figure("gradcam", name)} for name in MODEL_NAMES]
    figures += [{"group": "Most confident errors", "title": name, "path": folder / model_figure("misclassified", name)}
                for name in MODEL_NAMES]
    return [{**f, "path": f["path"].as_posix()} for f in figures if f["path"].is_file()]


def test_images() -> list[str]:
    """The test split's image files, relative to TEST_IMAGES_DIR (empty before `split`)."""
    if not TEST_IMAGES_DIR.is_dir():
        return []
    return [p.relative_to(TEST_IMAGES_DIR).as_posix() for p in sorted(TEST_IMAGES_DIR.rglob("*"))
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")]


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


class Study:
    """The loaded models and what the page shows beside them; thread-safe."""

    def __init__(self, max_upload_bytes: int, max_pixels: int):
        self.image_size = load_params("split")["split"]["image_size"]
        try:
            self.classes = read_classes()
        except FileNotFoundError as e:  # a damaged file is read_classes' own UserError
            raise UserError(str(e)) from None
        self.max_upload_bytes, self.max_pixels = max_upload_bytes, max_pixels
        self.metrics = metrics_on_test()
        # TensorFlow warns that five models traced five predict functions; it is meant.
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        self.models = {name: load_predictor(name, self.image_size)
                       for name in MODEL_NAMES if model_file(name).is_file()}
        if not self.models:
            raise UserError(f"{model_file(MODEL_NAMES[-1])} not found (nor any other trained model): {NOT_FOUND_HINT}")
        self.conv_layers = {name: self._conv_layer(model) for name, model in self.models.items()}
        self.test_images = test_images()
        # One computation at a time: TensorFlow uses both cores for one image anyway, and
        # Grad-CAM switches a model's last activation off while it runs.
        self.lock = threading.RLock()  # re-entered: gradcam_png asks _probability
        self.inputs: OrderedDict[str, np.ndarray] = OrderedDict()
        self._warm_up()

    @staticmethod
    def _conv_layer(model) -> str | None:
        from stages.lib.gradcam import last_conv_layer

        try:
            return last_conv_layer(model)
        except ValueError:
            return None  # no convolution, no heatmap; the page says so

    def _warm_up(self) -> None:
        """Build each model's functions now, so the first photo does not wait for them."""
        blank = np.full((self.image_size, self.image_size, 3), 128, np.uint8)
        for name in self.models:
            self._probability(name, blank)
            self.gradcam_png(name, blank)

    # ------------------------------------------------------------ what the page asks

    def info(self) -> dict:
        negative, positive = self.classes
        return {
            "classes": {"negative": negative, "positive": positive}, "threshold": THRESHOLD,
            "image_size": self.image_size, "max_upload_bytes": self.max_upload_bytes, "max_pixels": self.max_pixels,
            "models": [{"name": name, "description": DESCRIPTIONS[name], "trained": name in self.models,
                        "gradcam": self.conv_layers.get(name) is not None, **self.metrics.get(name, {})}
                       for name in MODEL_NAMES],
            "test_images": self.test_images,
        }

    def study(self) -> dict:
        return {"models": [{"name": name, "description": DESCRIPTIONS[name], **self.metrics.get(name, {})}
                           for name in MODEL_NAMES],
                "figures": study_figures()}

    def classify_upload(self, file_name: str, data: bytes) -> dict:
        if len(data) > self.max_upload_bytes:
            return self.refusal(file_name, self.too_many_bytes(len(data)))
        with tempfile.TemporaryDirectory(prefix="page-upload-") as folder:
            path = Path(folder) / "upload"  # Pillow reads the format from the bytes, never from the name
            path.write_bytes(data)
            return self.classify_file(file_name, path)

    def classify_test_image(self, relative: str) -> dict:
        if relative not in self.test_images:  # only the listed files: no path from the request is opened
            return self.refusal(relative, "not an image of the test split")
        return self.classify_file(relative, TEST_IMAGES_DIR / relative)

    def classify_file(self, file_name: str, path: Path) -> dict:
        too_large = self.too_many_pixels(path)
        if too_large:
            return self.refusal(file_name, too_large)
        image, error = read_image(path, self.image_size)
        if error:
            return self.refusal(file_name, error)
        token = secrets.token_urlsafe(12)
        with self.lock:
            self.inputs[token] = image
            while len(self.inputs) > KEPT_INPUTS:
                self.inputs.popitem(last=False)
        results = []
        for name in self.models:
            p = self._probability(name, image)
            results.append({"model": name, "p": p, "label": self.classes[int(predicted_labels(p))]})
        return {"file": file_name, "token": token, "error": None, "results": results}

    def input_png(self, token: str) -> bytes | None:
        """The image as the models saw it, or None for a token not (or no longer) kept."""
        with self.lock:
            image = self.inputs.get(token)
        return None if image is None else png_bytes(image)

    def gradcam_of(self, token: str, name: str) -> bytes | None:
        with self.lock:
            image = self.inputs.get(token)
        return None if image is None or name not in self.models else self.gradcam_png(name, image)

    def gradcam_png(self, name: str, image: np.ndarray) -> bytes | None:
        """The model's Grad-CAM for the class it predicts, over the image it saw."""
        from stages.figures.evaluation import overlay
        from stages.lib.gradcam import grad_cam

        layer = self.conv_layers.get(name)
        if layer is None:
            return None
        with self.lock:
            p = self._probability(name, image)
            heatmap, _ = grad_cam(self.models[name], image[None], layer, classes=predicted_labels([p]))
        return png_bytes(np.clip(overlay(image, heatmap[0]) * 255 + 0.5, 0, 255).astype(np.uint8))

    def _probability(self, name: str, image: np.ndarray) -> float:
        with self.lock:
            return float(np.asarray(self.models[name].predict_on_batch(image[None])).reshape(-1)[0])

    # ------------------------------------------------------------ limits

    def too_many_bytes(self, size: int) -> str:
        return f"file too large: {size / 1e6:.1f} MB (limit {self.max_upload_bytes / 1e6:.1f} MB)"

    def too_many_pixels(self, path: Path) -> str | None:
        """The pixel limit, from the header alone (before anything is decoded)."""
        try:
            with Image.open(path) as im:
                width, height = im.size
        except Exception:  # noqa: BLE001 - not an image, or a bomb: read_image says which
            return None
        if width * height > self.max_pixels:
            return (f"too many pixels: {width}x{height} = {width * height / 1e6:.1f} Mpx "
                    f"(limit {self.max_pixels / 1e6:.1f} Mpx)")
        return None

    @staticmethod
    def refusal(file_name: str, error: str) -> dict:
        return {"file": file_name, "token": None, "error": error, "results": []}


class Handler(BaseHTTPRequestHandler):
    """GET the page and its data, POST a file to classify; JSON for data, PNG for images."""

    study: Study  # set on the subclass made by serve()
    timeout = 60  # seconds a silent connection (a body never sent) may hold its thread
    server_version = "catsdogs-page"
    sys_version = ""

    def log_message(self, format, *args):  # the base class's signature
        pass  # one line per request would drown the lines that matter

    def do_GET(self):
        self._answer(self._get)

    def do_POST(self):
        self._answer(self._post)

    def _answer(self, route) -> None:
        try:
            route(urlsplit(self.path))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser went away; nothing to tell it
        except Exception as e:  # noqa: BLE001 - the page gets a message, the terminal one line
            print(f"page: {self.command} {self.path}: {type(e).__name__}: {e}", file=sys.stderr)
            self._send_json({"error": f"the server failed on this request ({type(e).__name__}: {e})"},
                            HTTPStatus.INTERNAL_SERVER_ERROR)

    def _get(self, url) -> None:
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path in STATIC_FILES:
            file, kind = STATIC_FILES[url.path]
            self._send((STATIC_DIR / file).read_bytes(), f"{kind}; charset=utf-8")
        elif url.path == "/api/info":
            self._send_json(self.study.info())
        elif url.path == "/api/study":
            self._send_json(self.study.study())
        elif url.path == "/api/test-image":
            self._send_json(self.study.classify_test_image(query.get("file", "")))
        elif url.path == "/api/input":
            self._send_png(self.study.input_png(query.get("token", "")))
        elif url.path == "/api/gradcam":
            self._send_png(self.study.gradcam_of(query.get("token", ""), query.get("model", "")))
        elif url.path.startswith("/plots/"):
            wanted = unquote(url.path[1:])
            if wanted in {f["path"] for f in study_figures()}:  # the listed figures only
                self._send(Path(wanted).read_bytes(), "image/png")
            else:
                self._send_json({"error": f"no figure {wanted}"}, HTTPStatus.NOT_FOUND)
        else:
            self._send_json({"error": f"no page {url.path}"}, HTTPStatus.NOT_FOUND)

    def _post(self, url) -> None:
        if url.path != "/api/classify":
            self._send_json({"error": f"no page {url.path}"}, HTTPStatus.NOT_FOUND)
            return
        file_name = unquote(parse_qs(url.query).get("name", ["upload"])[0])
        try:
            size = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._send_json(Study.refusal(file_name, "no Content-Length: send the file as the request body"),
                            HTTPStatus.LENGTH_REQUIRED)
            return
        if size < 0:  # rfile.read(-1) would read until the client closes: refused before reading
            self.close_connection = True
            self._send_json(Study.refusal(file_name, f"Content-Length {size}: must be the body's size in bytes"),
                            HTTPStatus.BAD_REQUEST)
            return
        if size > self.study.max_upload_bytes:
            self._discard_body(size)
            self._send_json(Study.refusal(file_name, self.study.too_many_bytes(size)),
                            HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
            return
        self._send_json(self.study.classify_upload(file_name, self.rfile.read(size)))

    def _discard_body(self, size: int) -> None:
        """Read a refused body to its end, so the client, still sending, reads the refusal
        (a connection closed on it mid-upload is all a browser would report); beyond
        DRAIN_LIMIT the connection is just closed."""
        self.close_connection = True
        if size <= DRAIN_LIMIT:
            while size > 0 and (chunk := self.rfile.read(min(size, 1 << 16))):
                size -= len(chunk)

    def _send_png(self, png: bytes | None) -> None:
        if png is None:
            self._send_json({"error": "no such image (the page may have been open for long: upload it again)"},
                            HTTPStatus.NOT_FOUND)
        else:
            self._send(png, "image/png")

    def _send_json(self, value, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(json.dumps(value).encode(), "application/json", status)

    def _send(self, body: bytes, kind: str, status: HTTPStatus = HTTPStatus.OK) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for key, value in SECURITY_HEADERS.items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        if not isinstance(error, (BrokenPipeError, ConnectionResetError)):
            print(f"page: a request from {client_address[0]} failed: {type(error).__name__}: {error}", file=sys.stderr)


def serve(host: str, port: int) -> Server:
    """The server, listening already (so a taken port is said before minutes of loading);
    it answers once its handler's `study` is set and serve_forever() runs."""
    handler = type("StudyHandler", (Handler,), {})
    try:
        return Server((host, port), handler)
    except OSError as e:
        raise UserError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e}); "
                        "choose another --port, or --port 0 for a free one") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m stages.tools.page",
        description="Your photo against the study's five models, and the study, in a browser.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: the network)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: a free one)")
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                        help=f"largest file accepted, in MB (default {DEFAULT_MAX_UPLOAD_MB:g})")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                        help=f"most pixels an image may have (default {MAX_PIXELS}, the pipeline's limit)")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: must be 0-65535")
    if not (math.isfinite(args.max_upload_mb) and args.max_upload_mb > 0):  # nan and inf parse as floats
        raise UserError(f"--max-upload-mb {args.max_upload_mb}: must be a positive, finite number of MB")
    if not 0 < args.max_pixels <= MAX_PIXELS:
        raise UserError(f"--max-pixels {args.max_pixels}: must be 1-{MAX_PIXELS} (the pipeline's limit)")
    return args


def serve_until_stopped(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    server = serve(args.host, args.port)
    try:
        study = server.RequestHandlerClass.study = Study(int(args.max_upload_mb * 1e6), args.max_pixels)
        host, port = server.server_address[:2]
        missing = [name for name in MODEL_NAMES if name not in study.models]
        print(f"page: http://{host}:{port}/ ({len(study.models)} models loaded in {time.perf_counter() - started:.1f} s"
              + (f"; not trained: {', '.join(missing)}" if missing else "") + "); Ctrl-C stops it", flush=True)
        if host not in ("127.0.0.1", "localhost"):
            print(f"page: listening on {host}: anyone who can reach this machine can use it", flush=True)
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        serve_until_stopped(args)
    except KeyboardInterrupt:  # Ctrl-C is how a user stops it, while loading or serving
        print("page: stopped", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
