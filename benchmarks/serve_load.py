"""Load on `digitrec serve` over loopback: throughput, latency, errors, memory and cold start.

    python -m benchmarks.serve_load [--ckpt PATH] [--clients 1,8,32] [--seconds 10] [--sets mnist28,photo]

Starts the real server as a subprocess on a free loopback port, then for each image set and each
client count runs that many concurrent clients for a bounded time. Each client is a thread with its
own keep-alive connection that sends one real digit image per request (multipart, as `curl -F`
does) and waits for the answer. Image sets, from the MNIST test set:
  mnist28  the 28x28 test images themselves, as PNG (about 300 bytes each);
  photo    the same digits as photo-like PNGs (digitrec.foreign_set's dark_on_light, 112-250 px).
Reports requests/s, p50/p95/p99 latency, errors (non-200 answers or failed requests), wrong digits,
the mean batch size of the server's forward passes, the server's peak RSS and its cold start
(process start to the first answer). Client and server share the machine's cores.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks import foreign_set
from digitrec.data.mnist import load_mnist
from digitrec.errors import DigitrecError
from digitrec.inference.predict import newest_run_checkpoint

BOUNDARY = "digitrec-bench-5d21"


def multipart(name: str, data: bytes) -> bytes:
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\nContent-Type: image/png\r\n\r\n'
    return head.encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def image_sets(mnist_dir: str, count: int, folder: Path) -> dict[str, list[tuple[bytes, int]]]:
    mnist = load_mnist(mnist_dir)
    images, labels = mnist.test_images[:count].numpy(), mnist.test_labels[:count].numpy()
    sets = {"mnist28": []}
    for image, label in zip(images, labels):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        sets["mnist28"].append((buffer.getvalue(), int(label)))
    written = foreign_set.write_mnist_photos(folder, images, labels, "dark_on_light")
    sets["photo"] = [(Path(path).read_bytes(), int(label)) for path, label in written]
    return sets


class ServerProcess:
    def __init__(self, ckpt: Path) -> None:
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "digitrec", "serve", "--ckpt", str(ckpt), "--port", "0"],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.port = None
        for line in self.process.stderr:
            if " at http://" in line:
                self.port = int(line.split(" at http://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
                break
        if self.port is None:
            raise SystemExit(f"digitrec serve did not start (exit code {self.process.wait()})")
        threading.Thread(target=self.process.stderr.read, daemon=True).start()  # keep the pipe drained

    def cold_start(self, body: bytes) -> float:
        """Seconds from process start to the first answer of /predict (polled until it answers)."""
        while True:
            try:
                status, _ = request(http.client.HTTPConnection("127.0.0.1", self.port, timeout=30), body)
                if status == 200:
                    return time.perf_counter() - self.started
            except OSError:
                time.sleep(0.005)

    def health(self) -> dict:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        connection.request("GET", "/health")
        return json.loads(connection.getresponse().read())

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(30)


def request(connection: http.client.HTTPConnection, body: bytes) -> tuple[int, dict]:
    connection.request("POST", "/predict?top_k=1", body=body, headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def client(port: int, bodies: list[tuple[bytes, int]], offset: int, deadline: float, out: dict) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies, errors, wrong, index = [], 0, 0, offset
    while time.perf_counter() < deadline:
        body, label = bodies[index % len(bodies)]
        index += 1
        started = time.perf_counter()
        try:
            status, answer = request(connection, body)
        except (OSError, http.client.HTTPException, ValueError):
            errors += 1
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            continue
        latencies.append(time.perf_counter() - started)
        if status != 200:
            errors += 1
        elif answer["results"][0]["digit"] != label:
            wrong += 1
    connection.close()
    out.update(latencies=latencies, errors=errors, wrong=wrong)


def run_level(server: ServerProcess, bodies: list[tuple[bytes, int]], clients: int, seconds: float) -> dict:
    before = server.health()
    started = time.perf_counter()
    deadline = started + seconds
    outs = [{} for _ in range(clients)]
    threads = [threading.Thread(target=client, args=(server.port, bodies, i * len(bodies) // clients, deadline, outs[i])) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    after = server.health()
    latencies = np.array([x for out in outs for x in out["latencies"]]) * 1000
    images, passes = after["images"] - before["images"], after["forward_passes"] - before["forward_passes"]
    return {
        "clients": clients,
        "requests": int(latencies.size),
        "req_per_s": round(latencies.size / elapsed, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p95_ms": round(float(np.percentile(latencies, 95)), 2),
        "p99_ms": round(float(np.percentile(latencies, 99)), 2),
        "errors": sum(out["errors"] for out in outs),
        "wrong_digits": sum(out["wrong"] for out in outs),
        "mean_batch": round(images / passes, 2) if passes else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, help="model to serve (default: the newest run under outputs/)")
    parser.add_argument("--mnist-dir", default=os.environ.get("DIGITREC_MNIST_DIR"), help="MNIST folder (default: $DIGITREC_MNIST_DIR)")
    parser.add_argument("--clients", default="1,8,32", help="concurrent client counts (default: 1,8,32)")
    parser.add_argument("--seconds", type=float, default=10, help="seconds of load per client count and set (default: 10)")
    parser.add_argument("--sets", default="mnist28,photo", help="image sets: mnist28, photo (default: both)")
    parser.add_argument("--images", type=int, default=200, help="MNIST test digits to send, cycled (default: 200)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args()
    if not args.mnist_dir:
        parser.error("set DIGITREC_MNIST_DIR or pass --mnist-dir")
    try:
        ckpt = args.ckpt or newest_run_checkpoint()
    except DigitrecError as err:
        parser.error(str(err))
    counts = [int(c) for c in args.clients.split(",")]
    names = args.sets.split(",")

    with tempfile.TemporaryDirectory() as tmp:
        sets = image_sets(args.mnist_dir, args.images, Path(tmp))
    unknown = set(names) - set(sets)
    if unknown:
        parser.error(f"unknown image sets {sorted(unknown)}: choose from {sorted(sets)}")
    bodies = {name: [(multipart(f"{i}.png", data), label) for i, (data, label) in enumerate(sets[name])] for name in names}

    server = ServerProcess(ckpt)
    try:
        cold_start = server.cold_start(bodies[names[0]][0][0])
        results = []
        for name in names:
            run_level(server, bodies[name], 1, min(1.0, args.seconds))  # warm-up: first-call costs out of the figures
            for clients in counts:
                result = {"set": name, **run_level(server, bodies[name], clients, args.seconds)}
                results.append(result)
                print(json.dumps(result), file=sys.stderr, flush=True)
        peak_rss = server.peak_rss_mb()
    finally:
        exit_code = server.stop()

    print(
        f"model: {ckpt}; cold start (process start to first answer): {cold_start:.2f} s; "
        f"server peak RSS: {peak_rss:.0f} MB; server exit code after SIGTERM: {exit_code}\n"
    )
    print("| images | clients | requests/s | p50 | p95 | p99 | errors | wrong digits | mean batch |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['set']} | {r['clients']} | {r['req_per_s']:.0f} | {r['p50_ms']:.1f} ms | {r['p95_ms']:.1f} ms | "
            f"{r['p99_ms']:.1f} ms | {r['errors']} | {r['wrong_digits']} / {r['requests']} | {r['mean_batch']} |"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"ckpt": str(ckpt), "cold_start_s": round(cold_start, 3), "peak_rss_mb": round(peak_rss), "results": results}, indent=2) + "\n"
        )
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
