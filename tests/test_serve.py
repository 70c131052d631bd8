"""`digitrec serve`: the real server as a subprocess, real images over HTTP, a real browser on the page."""

from __future__ import annotations

import asyncio
import base64
import http.client
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import find_mnist_dir
from predict_fixtures import crafted_png, malicious_checkpoint, mnist_digit_png, model_ckpt, predictor  # noqa: F401


class Server:
    """`digitrec serve` as a user starts it, on a free loopback port (--port 0), stopped by its PID."""

    def __init__(self, *args: str, cwd: Path, timeout: float = 120) -> None:
        env = {**os.environ, "DIGITREC_MNIST_DIR": str(find_mnist_dir()), "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "digitrec", "serve", "--port", "0", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.url = self._wait_for_url(timeout)

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def _wait_for_url(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if " at http://" in line:
                    return line.split(" at ", 1)[1].split(" ", 1)[0]
            if self.process.poll() is not None:
                self.reader.join(10)
                return None
            time.sleep(0.05)
        raise AssertionError(f"no URL from digitrec serve within {timeout} s: {self.stderr}")

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.url.removeprefix("http://").rstrip("/").rsplit(":", 1)
        return host, int(port)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, dict | str]:
        connection = http.client.HTTPConnection(*self.address, timeout=60)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        kind = response.getheader("content-type", "")
        return response.status, json.loads(data) if kind.startswith("application/json") else data.decode()

    def post_files(self, files: list[tuple[str, bytes]], query: str = "") -> tuple[int, dict]:
        body, kind = multipart([("image", name, data) for name, data in files])
        return self.request("POST", "/predict" + query, body, {"Content-Type": kind})

    def post_json(self, document, query: str = "") -> tuple[int, dict]:
        return self.request("POST", "/predict" + query, json.dumps(document).encode(), {"Content-Type": "application/json"})

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
        code = self.process.wait(60)
        self.reader.join(10)
        return code


def multipart(parts: list[tuple[str, str | None, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body as curl -F sends it: (field, filename or None for text, data)."""
    boundary = "digitrec-test-7f3a9c"
    chunks = []
    for field, filename, data in parts:
        disposition = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename is not None else "")
        kind = "Content-Type: application/octet-stream\r\n" if filename is not None else ""
        chunks.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n{kind}\r\n".encode() + data + b"\r\n")
    return b"".join(chunks) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@pytest.fixture(scope="module")
def digits(mnist, tmp_path_factory):
    """The first MNIST test digits as photo-like PNG and JPEG files, with their labels."""
    folder = tmp_path_factory.mktemp("digits")
    pngs = [mnist_digit_png(mnist, i, folder / f"digit-{i}.png") for i in range(6)]
    jpegs = []
    for png in pngs:
        jpeg = png.with_suffix(".jpg")
        Image.open(png).convert("RGB").save(jpeg, quality=85)
        jpegs.append(jpeg)
    return pngs, jpegs, mnist.test_labels[:6].tolist()


@pytest.fixture(scope="module")
def server(model_ckpt, tmp_path_factory):
    started = Server("--ckpt", str(model_ckpt), cwd=tmp_path_factory.mktemp("serve"))
    assert started.url, started.stderr
    yield started
    code = started.stop()
    assert code == 0 and "Traceback" not in started.stderr, started.stderr
    assert started.lines[-1] == "digitrec serve: stopped"


# --- the API -----------------------------------------------------------------------------------


def test_health_and_model(server, model_ckpt):
    status, health = server.request("GET", "/health")
    assert status == 200 and health["status"] == "ok"
    status, model = server.request("GET", "/model")
    assert status == 200
    assert model["architecture"] == "MLP 784-500-100-10 (relu)" and model["num_classes"] == 10
    assert model["net"]["_target_"] == "digitrec.nets.MLP" and model["net"]["hidden_sizes"] == [500, 100]
    assert model["parameters"] == 784 * 500 + 500 + 500 * 100 + 100 + 100 * 10 + 10
    assert model["checkpoint"] == str(model_ckpt.resolve())
    assert model["test_accuracy"] is None  # this model.ckpt is not from a run with metrics.json


def test_png_and_jpeg_files_give_the_digits_and_the_same_answer_as_predict(server, digits, predictor):
    pngs, jpegs, labels = digits
    for path, label in zip(pngs + jpegs, labels + labels):
        status, answer = server.post_files([(path.name, path.read_bytes())])
        assert status == 200, answer
        [result] = answer["results"]
        expected = predictor.predict_one(path, top_k=3)
        assert result["name"] == path.name and result["digit"] == label == expected.digit
        assert result["probability"] == pytest.approx(expected.probability, abs=1e-4)
        assert [t["digit"] for t in result["top_k"]] == [d for d, _ in expected.top_k]


def test_several_images_in_one_request_answer_in_order(server, digits, predictor):
    pngs, jpegs, labels = digits
    files = [(p.name, p.read_bytes()) for p in pngs + jpegs[:2]]
    status, answer = server.post_files(files, "?top_k=5&preprocessed=true")
    assert status == 200, answer
    results = answer["results"]
    assert [r["name"] for r in results] == [name for name, _ in files]
    assert [r["digit"] for r in results] == labels + labels[:2]
    for result, path in zip(results, pngs):
        assert len(result["top_k"]) == 5 and result["top_k"][0]["digit"] == result["digit"]
        seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(result["preprocessed"]))))
        assert seen.shape == (28, 28)
        assert np.array_equal(seen, np.round(predictor.predict_one(path).image * 255).astype(np.uint8))


def test_json_with_base64_images_and_data_urls(server, digits):
    pngs, jpegs, labels = digits
    plain = base64.b64encode(pngs[0].read_bytes()).decode()
    data_url = "data:image/jpeg;base64," + base64.b64encode(jpegs[1].read_bytes()).decode()
    status, answer = server.post_json({"images": [plain, data_url]}, "?top_k=1")
    assert status == 200, answer
    assert [r["digit"] for r in answer["results"]] == labels[:2] and [r["name"] for r in answer["results"]] == ["image 0", "image 1"]
    assert all(len(r["top_k"]) == 1 for r in answer["results"])
    status, answer = server.post_json({"image": plain})
    assert status == 200 and answer["results"][0]["digit"] == labels[0]


def bad_image_files(mnist, folder: Path) -> dict[str, tuple[bytes, str]]:
    good = mnist_digit_png(mnist, 0, folder / "good.png").read_bytes()
    corrupt = bytearray(good)
    corrupt[60:160] = bytes(100)
    blank = io.BytesIO()
    Image.new("RGB", (400, 300), (240, 235, 220)).save(blank, format="PNG")
    return {
        "empty.png": (b"", "the file is empty"),
        "notes.png": (b"this is not an image\n", "not an image file"),
        "corrupt.png": (bytes(corrupt), "truncated or corrupt"),
        "blank.png": (blank.getvalue(), "no digit found"),
        "giant.png": (crafted_png(40000, 40000), "too large"),  # refused from its header, never decoded
        "huge.bin": (b"\0" * 11_000_000, "at most 10 MB per image"),
    }


@pytest.mark.parametrize("name", ["empty.png", "notes.png", "corrupt.png", "blank.png", "giant.png", "huge.bin"])
def test_a_bad_image_gets_422_with_its_problem(server, mnist, tmp_path, name):
    data, problem = bad_image_files(mnist, tmp_path)[name]
    status, answer = server.post_files([(name, data)])
    assert status == 422
    assert answer["error"].startswith(f"{name}: ") and problem in answer["error"] and "\n" not in answer["error"]
    assert answer["results"] == [{"name": name, "error": answer["error"].removeprefix(f"{name}: ")}]


def test_bad_and_good_images_together_each_get_their_outcome(server, digits):
    pngs, _, labels = digits
    status, answer = server.post_files([(pngs[0].name, pngs[0].read_bytes()), ("notes.txt", b"hello"), (pngs[1].name, pngs[1].read_bytes())])
    assert status == 422 and answer["error"].startswith("1 of 3 images could not be read")
    first, bad, second = answer["results"]
    assert (first["digit"], second["digit"]) == tuple(labels[:2])
    assert "not an image file" in bad["error"] and "digit" not in bad


def bad_requests(png: bytes) -> dict[str, tuple[str, str, bytes, dict, int, str]]:
    """Each way a request can be wrong: (method, path, body, headers, status, part of the message)."""
    many, many_type = multipart([("image", f"{i}.png", png) for i in range(65)])
    text, text_type = multipart([("image", None, b"digit.png")])
    none, none_type = multipart([])
    one, one_type = multipart([("image", "d.png", png)])
    return {
        "wrong content type": ("POST", "/predict", png, {"Content-Type": "image/png"}, 415, "multipart/form-data"),
        "no content type": ("POST", "/predict", png, {}, 415, "no content type"),
        "no image": ("POST", "/predict", none, {"Content-Type": none_type}, 400, "holds no image"),
        "text instead of a file": ("POST", "/predict", text, {"Content-Type": text_type}, 400, "is text, not a file"),
        "malformed multipart": (
            "POST",
            "/predict",
            b"garbage",
            {"Content-Type": "multipart/form-data; boundary=x"},
            400,
            "multipart body cannot be read",
        ),
        "too many images": ("POST", "/predict", many, {"Content-Type": many_type}, 413, "at most 64 per request"),
        # Refused from its Content-Length alone: the server reads none of it.
        "too large": ("POST", "/predict", b"x" * 1000, {"Content-Type": one_type, "Content-Length": "30000000"}, 413, "larger than 25 MB"),
        "invalid JSON": ("POST", "/predict", b"{images: [", {"Content-Type": "application/json"}, 400, "not valid JSON"),
        "JSON without images": ("POST", "/predict", b'{"photos": []}', {"Content-Type": "application/json"}, 400, "has no images"),
        "bad base64": ("POST", "/predict", b'{"images": ["not base64!"]}', {"Content-Type": "application/json"}, 400, "not valid base64"),
        "top_k too small": ("POST", "/predict?top_k=0", one, {"Content-Type": one_type}, 400, "top_k"),
        "top_k too large": ("POST", "/predict?top_k=11", one, {"Content-Type": one_type}, 400, "top_k"),
        "top_k not a number": ("POST", "/predict?top_k=three", one, {"Content-Type": one_type}, 400, "top_k"),
        "GET on /predict": ("GET", "/predict", None, {}, 405, "not allowed"),
        "unknown path": ("GET", "/predictions", None, {}, 404, "there is no /predictions"),
    }


BAD_REQUESTS = list(bad_requests(b"").keys())


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_each_bad_request_gets_its_4xx_and_one_sentence(server, digits, case):
    method, path, body, headers, status, message = bad_requests(digits[0][0].read_bytes())[case]
    got, answer = server.request(method, path, body, headers)
    assert got == status, answer
    assert set(answer) == {"error"} and message in answer["error"] and "\n" not in answer["error"]


def test_the_server_still_answers_after_bad_requests(server, digits):
    pngs, _, labels = digits
    for case in BAD_REQUESTS:  # all of them again, one after the other
        method, path, body, headers, status, _ = bad_requests(pngs[0].read_bytes())[case]
        assert server.request(method, path, body, headers)[0] == status
    status, answer = server.post_files([(pngs[2].name, pngs[2].read_bytes())])
    assert status == 200 and answer["results"][0]["digit"] == labels[2]
    assert server.process.poll() is None and "Traceback" not in server.stderr


def test_concurrent_requests_all_get_their_answers(server, digits):
    pngs, jpegs, labels = digits
    files = list(zip(pngs + jpegs, labels + labels)) * 4

    def ask(item):
        path, label = item
        status, answer = server.post_files([(path.name, path.read_bytes())])
        return status, answer["results"][0]["digit"], label

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(ask, files))
    assert all(status == 200 and digit == label for status, digit, label in outcomes)
    _, health = server.request("GET", "/health")
    assert health["images"] >= len(files) and 1 <= health["forward_passes"] <= health["images"]


def test_the_page_is_one_self_contained_file(server):
    status, page = server.request("GET", "/")
    assert status == 200 and "<canvas" in page and 'type="file"' in page
    # Works offline: nothing is loaded from another host (the only link is to the server's own /docs).
    assert "http://" not in page and "https://" not in page and "<script src" not in page and "<link" not in page
    status, docs = server.request("GET", "/docs")
    assert status == 200 and "swagger" in docs.lower() and "cdn" not in docs.lower()
    status, schema = server.request("GET", "/openapi.json")
    assert status == 200 and {"/predict", "/health", "/model"} <= set(schema["paths"])


# --- batching, in-process ----------------------------------------------------------------------


def test_images_that_arrive_together_share_one_forward_pass(predictor, digits):
    from digitrec.inference.preprocess import preprocess
    from digitrec.inference.serve import MicroBatcher

    pngs, _, labels = digits
    images = [preprocess(path) for path in pngs]
    sizes = []

    def classify(batch):
        sizes.append(len(batch))
        return predictor.classify(batch)

    async def run():
        batcher = MicroBatcher(classify)
        worker = asyncio.create_task(batcher.run())
        together = await asyncio.gather(*(batcher.predict(image) for image in images))
        alone = await batcher.predict(images[0])
        worker.cancel()
        return together, alone

    together, alone = asyncio.run(run())
    assert sizes == [len(images), 1]
    assert [p.digit for p in together] == labels and alone.digit == labels[0]
    assert alone.probability == pytest.approx(together[0].probability, abs=1e-6)


def test_model_reports_the_test_accuracy_of_a_runs_tested_checkpoint(model_ckpt, tmp_path):
    from digitrec.inference.serve import tested_accuracy

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("model.ckpt", "checkpoints/epoch_003.ckpt", "checkpoints/last.ckpt"):
        shutil.copy(model_ckpt, run / name)
    (run / "metrics.json").write_text(json.dumps({"test/acc": 0.9786, "best_ckpt_path": str(run / "checkpoints/epoch_003.ckpt")}))
    assert tested_accuracy(run / "model.ckpt") == (0.9786, str(run / "metrics.json"))
    assert tested_accuracy(run / "checkpoints/epoch_003.ckpt")[0] == 0.9786
    assert tested_accuracy(run / "checkpoints/last.ckpt") == (None, None)  # never tested
    assert tested_accuracy(model_ckpt) == (None, None)


# --- starting and stopping ---------------------------------------------------------------------


def test_without_ckpt_the_newest_run_is_served_and_said_on_stderr(model_ckpt, tmp_path):
    run = tmp_path / "outputs" / "train" / "runs" / "2026-01-01_00-00-00_abcdef"
    run.mkdir(parents=True)
    shutil.copy(model_ckpt, run / "model.ckpt")
    (run / "metrics.json").write_text(json.dumps({"status": "ok", "test/acc": 0.9712, "best_ckpt_path": None, "model_path": str(run / "model.ckpt")}))
    started = Server(cwd=tmp_path)
    try:
        assert started.url and started.url.startswith("http://127.0.0.1:"), started.stderr
        assert started.lines[0].startswith(f"digitrec serve: using {Path('outputs/train/runs/2026-01-01_00-00-00_abcdef/model.ckpt')}")
        status, model = started.request("GET", "/model")
        assert status == 200 and model["test_accuracy"] == 0.9712 and model["checkpoint"] == str((run / "model.ckpt").resolve())
    finally:
        assert started.stop(signal.SIGINT) == 0  # Ctrl-C
    assert "Traceback" not in started.stderr and started.lines[-1] == "digitrec serve: stopped"


def test_a_refused_checkpoint_stops_serve_at_start(tmp_path):
    marker = tmp_path / "pwned"
    bad = malicious_checkpoint(tmp_path / "evil.ckpt", marker)
    started = Server("--ckpt", str(bad), cwd=tmp_path)
    assert started.url is None and started.process.wait(60) == 2
    [line] = started.lines
    assert line.startswith(f"digitrec: error: checkpoint {bad} was refused") and not marker.exists()


def test_a_taken_port_and_a_missing_ckpt_are_one_line_errors(server, tmp_path):
    env = {**os.environ, "DIGITREC_MNIST_DIR": str(find_mnist_dir())}
    command = [sys.executable, "-m", "digitrec", "serve", "--port", str(server.address[1])]
    taken = subprocess.run(
        [*command, "--ckpt", server.request("GET", "/model")[1]["checkpoint"]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert taken.returncode == 2 and taken.stderr.splitlines() == [
        f"digitrec: error: cannot listen on 127.0.0.1:{server.address[1]}: Address already in use; choose another --port or --host"
    ]
    missing = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and missing.stderr.splitlines() == [
        "digitrec: error: no trained model found under outputs/: train one with `digitrec train`, or pass --ckpt PATH"
    ]


def test_serving_does_not_import_lightning_hydra_or_torchvision():
    code = "import sys, digitrec.inference.serve, digitrec.command.main; print(sorted({'lightning', 'hydra', 'torchvision', 'torchmetrics'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --- a real browser on the page ----------------------------------------------------------------


def draw(page, points: list[tuple[float, float]]) -> None:
    """One stroke through points given as fractions of the drawing pad."""
    box = page.locator("#pad").bounding_box()
    at = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in points]
    page.mouse.move(*at[0])
    page.mouse.down()
    for x, y in at[1:]:
        page.mouse.move(x, y, steps=8)
    page.mouse.up()


def screenshot(page, name: str, tmp_path: Path) -> Path:
    """A PNG of the page; DIGITREC_SCREENSHOTS=docs also keeps a copy there (docs/serve.png in the README)."""
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    keep = os.environ.get("DIGITREC_SCREENSHOTS")
    if keep:
        shutil.copy(path, Path(keep) / name)
    return path


@pytest.mark.slow
def test_the_page_reads_a_drawn_digit_and_an_uploaded_photo(server, browser, digits, tmp_path):
    pngs, _, labels = digits
    page = browser.new_page(viewport={"width": 900, "height": 640})
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(server.url)
    page.wait_for_function("document.getElementById('model').textContent.includes('MLP 784-500-100-10')")

    draw(page, [(0.5, 0.15), (0.5, 0.85)])  # a vertical stroke: a 1
    page.wait_for_function("document.getElementById('digit').textContent === '1'", timeout=30_000)
    assert page.locator("#bars .bar").count() == 3 and page.locator("#bars .bar").first.get_attribute("data-digit") == "1"
    size = page.evaluate("[document.getElementById('preview').naturalWidth, document.getElementById('preview').naturalHeight]")
    assert size == [28, 28]

    page.click("#clear")
    assert page.text_content("#digit") == "?"
    draw(page, [(0.25, 0.2), (0.75, 0.2), (0.45, 0.85)])  # a 7: the top bar, then down
    page.wait_for_function("document.getElementById('digit').textContent === '7'", timeout=30_000)
    screenshot(page, "serve.png", tmp_path)

    page.set_input_files("#file", str(pngs[1]))  # the file picker
    page.wait_for_function(f"document.getElementById('status').textContent.includes('sure, from {pngs[1].name}')", timeout=30_000)
    assert page.text_content("#digit") == str(labels[1])

    phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=1, is_mobile=True, has_touch=True)
    phone.goto(server.url)
    phone.set_input_files("#file", str(pngs[2]))
    phone.wait_for_function(f"document.getElementById('status').textContent.includes('sure, from {pngs[2].name}')", timeout=30_000)
    assert phone.text_content("#digit") == str(labels[2])
    # Readable on a phone: nothing wider than the screen, the pad fits it.
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    assert phone.locator("#pad").bounding_box()["width"] <= 390
    screenshot(phone, "serve-phone.png", tmp_path)
    assert not errors


@pytest.mark.slow
def test_the_load_benchmark_runs_and_counts_no_errors(model_ckpt, tmp_path):
    from conftest import REPO

    out = tmp_path / "serve.json"
    env = {**os.environ, "DIGITREC_MNIST_DIR": str(find_mnist_dir())}
    command = [
        sys.executable,
        "-m",
        "benchmarks.serve_load",
        "--ckpt",
        str(model_ckpt),
        "--seconds",
        "0.5",
        "--clients",
        "1,4",
        "--images",
        "20",
        "--json",
        str(out),
    ]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert [(r["set"], r["clients"]) for r in report["results"]] == [("mnist28", 1), ("mnist28", 4), ("photo", 1), ("photo", 4)]
    assert all(r["errors"] == 0 and r["requests"] > 0 for r in report["results"])
    assert report["cold_start_s"] > 0 and report["peak_rss_mb"] > 0 and "| mnist28 | 4 |" in result.stdout


# --- collecting digits (--collect DIR) ---------------------------------------------------------


@pytest.fixture(scope="module")
def collecting(model_ckpt, tmp_path_factory):
    """A server started with --collect: its folder does not exist yet (the server makes it)."""
    folder = tmp_path_factory.mktemp("collect") / "my_digits"
    started = Server("--ckpt", str(model_ckpt), "--collect", str(folder), cwd=tmp_path_factory.mktemp("serve-collect"))
    assert started.url, started.stderr
    yield started, folder
    assert started.stop() == 0 and "Traceback" not in started.stderr, started.stderr


def post_collect(server: Server, files: list[tuple[str, bytes]], query: str) -> tuple[int, dict]:
    body, kind = multipart([("image", name, data) for name, data in files])
    return server.request("POST", "/collect" + query, body, {"Content-Type": kind})


def test_collect_is_refused_when_the_server_was_not_asked_to(server, digits):
    pngs, _, _ = digits
    status, answer = post_collect(server, [("a.png", pngs[0].read_bytes())], "?digit=7")
    assert status == 403 and "--collect DIR" in answer["error"]
    assert server.request("GET", "/model")[1]["collect"] is False


def test_collect_saves_under_a_made_name_in_the_digits_folder(collecting, digits):
    server, folder = collecting
    pngs, jpegs, labels = digits
    assert server.request("GET", "/model")[1]["collect"] is True
    status, answer = post_collect(server, [("../../evil.png", jpegs[0].read_bytes())], f"?digit={labels[0]}")
    assert status == 200, answer
    saved = folder / answer["saved"]
    # The request's name is never used: the file is in DIR/N/, named by the server, with its format's extension.
    assert saved.parent == folder / str(labels[0]) and saved.suffix == ".jpg" and "evil" not in saved.name
    assert saved.read_bytes() == jpegs[0].read_bytes() and answer["count"] == 1
    assert not list(folder.parent.glob("evil*"))
    # Bad requests save nothing.
    assert post_collect(server, [("a.png", pngs[1].read_bytes())], "?digit=12")[0] == 400
    assert post_collect(server, [("a.png", pngs[1].read_bytes())], "")[0] == 400
    status, answer = post_collect(server, [("notes.txt", b"not an image")], "?digit=3")
    assert status == 422 and "notes.txt" in answer["error"] and "not saved" in answer["error"]
    assert sorted(p.relative_to(folder).parts[0] for p in folder.rglob("*") if p.is_file()) == [str(labels[0])]


@pytest.mark.slow
def test_the_page_saves_a_drawn_digit_into_the_collect_folder(collecting, server, browser, tmp_path):
    collector, folder = collecting
    page = browser.new_page(viewport={"width": 900, "height": 700})
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(collector.url)
    page.wait_for_selector("#collect:not([hidden]) button[data-save='7']")
    draw(page, [(0.25, 0.2), (0.75, 0.2), (0.45, 0.85)])  # a 7
    page.wait_for_function("document.getElementById('digit').textContent === '7'", timeout=30_000)
    page.click("button[data-save='7']")
    page.wait_for_function("document.getElementById('saved').textContent.startsWith('Saved as 7/')", timeout=30_000)
    saved = sorted((folder / "7").glob("*.png"))
    assert len(saved) == 1 and Image.open(saved[0]).size == (280, 280)
    assert not errors
    # Without --collect the page offers no saving.
    plain = browser.new_page()
    plain.goto(server.url)
    plain.wait_for_function("document.getElementById('model').textContent.includes('MLP')")
    assert plain.locator("#collect").is_hidden()
