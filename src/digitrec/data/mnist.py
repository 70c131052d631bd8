"""The four official MNIST files: find them, verify their SHA-256, parse them into tensors.

A folder may hold each file raw or gzipped (`train-images-idx3-ubyte` or `...ubyte.gz`).
Checksums are those of the uncompressed files, as published, so any copy can be checked.

A file that passed once is remembered (by path, size, modification time and inode, in the user's
cache folder), so a folder is hashed once, not at every start; a changed file is hashed again.
Downloads go to a temporary name, are verified, then renamed, under a lock: a download cut off
or two processes downloading at once never leave a bad file under an official name.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from digitrec.errors import DigitrecError, first_line

if TYPE_CHECKING:
    import torch

SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
HOW_TO_PROVIDE = (
    "set DIGITREC_MNIST_DIR (or data.data_dir=...) to a folder with the four official MNIST files, "
    "or run with data.download=true where a network is available"
)
# Base URLs to download from instead of torchvision's official mirrors (comma-separated), e.g. a
# mirror inside a company network.
MIRRORS_ENV = "DIGITREC_MNIST_MIRRORS"
DOWNLOAD_TIMEOUT_S = 60


class MNISTTensors(NamedTuple):
    train_images: torch.Tensor  # uint8 (60000, 28, 28)
    train_labels: torch.Tensor  # int64 (60000,)
    test_images: torch.Tensor  # uint8 (10000, 28, 28)
    test_labels: torch.Tensor  # int64 (10000,)


def mnist_folder(data_dir: str | None, download: bool, download_dir: str) -> tuple[Path, bool]:
    """Where the four files are (the local copy if configured, else the download folder), and
    whether they are to be downloaded there."""
    if data_dir:
        return Path(data_dir).expanduser(), False
    return Path(download_dir).expanduser() / "MNIST" / "raw", bool(download)


def find_file(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DigitrecError(f"MNIST file {name}[.gz] is missing from {folder}: {HOW_TO_PROVIDE}")


# --- remembering verified files ----------------------------------------------------------------


def memo_path() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "digitrec" / "mnist-verified.json"


def _identity(stat: os.stat_result) -> list[int]:
    return [stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev]


def _read_memo() -> dict[str, dict]:
    try:
        memo = json.loads(memo_path().read_text())
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def is_remembered(path: Path, name: str, stat: os.stat_result) -> bool:
    entry = _read_memo().get(str(path.resolve()))
    return isinstance(entry, dict) and entry.get("sha256") == SHA256[name] and entry.get("identity") == _identity(stat)


def remember(path: Path, name: str, stat: os.stat_result) -> None:
    """Note that this very file (same size, mtime, inode) passed its checksum; never inside the data folder."""
    target = memo_path()
    memo = _read_memo()
    memo[str(path.resolve())] = {"sha256": SHA256[name], "identity": _identity(stat)}
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        temp.write_text(json.dumps(memo, indent=1))
        os.replace(temp, target)
    except OSError:
        pass  # an unwritable cache only costs a hash at the next start


# --- verifying ---------------------------------------------------------------------------------


def _uncompressed(path: Path, raw: bytes) -> bytes:
    return gzip.decompress(raw) if path.suffix == ".gz" else raw


def read_verified(path: Path, name: str) -> bytes:
    """The uncompressed bytes of one MNIST file, after checking them against the published hash
    (or finding this very file among those that passed before)."""
    try:
        before = path.stat()
        data = _uncompressed(path, path.read_bytes())
        after = path.stat()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DigitrecError(f"MNIST file {path} cannot be read ({err}): replace it with a good copy; {HOW_TO_PROVIDE}") from None
    if _identity(before) == _identity(after) and is_remembered(path, name, after):
        return data
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256[name]:
        raise DigitrecError(
            f"MNIST file {path} has SHA-256 {digest[:16]}..., expected {SHA256[name][:16]}...: "
            f"it is corrupt or not the official file; replace it with a good copy ({HOW_TO_PROVIDE})"
        )
    if _identity(before) == _identity(after):
        remember(path, name, after)
    return data


def verify_file(path: Path, name: str) -> None:
    """Check one file, cheaply when it passed before (no read at all)."""
    try:
        stat = path.stat()
    except OSError as err:
        raise DigitrecError(f"MNIST file {path} cannot be read ({err}): {HOW_TO_PROVIDE}") from None
    if not is_remembered(path, name, stat):
        read_verified(path, name)


def verify_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise DigitrecError(f"MNIST folder {folder} does not exist: {HOW_TO_PROVIDE}")
    for name in SHA256:
        verify_file(find_file(folder, name), name)


def parse_idx(data: bytes) -> torch.Tensor:
    """Parse an IDX file of unsigned bytes (magic 0x0000 08 NDIM, then NDIM big-endian sizes)."""
    import numpy as np
    import torch

    ndim = data[3]
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
    return torch.from_numpy(array.copy())


def load_mnist(folder: str | Path) -> MNISTTensors:
    """Load and verify the official train and test sets from a folder."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DigitrecError(f"MNIST folder {folder} does not exist: {HOW_TO_PROVIDE}")
    tensors = {name: parse_idx(read_verified(find_file(folder, name), name)) for name in SHA256}
    return MNISTTensors(
        train_images=tensors["train-images-idx3-ubyte"],
        train_labels=tensors["train-labels-idx1-ubyte"].long(),
        test_images=tensors["t10k-images-idx3-ubyte"],
        test_labels=tensors["t10k-labels-idx1-ubyte"].long(),
    )


def prepare_mnist(data_dir: str | None, download: bool, download_dir: str) -> Path:
    """The verified folder of the four files: found, or downloaded where configured."""
    folder, will_download = mnist_folder(data_dir, download, download_dir)
    if will_download:
        return download_mnist(download_dir)
    verify_folder(folder)
    return folder


# --- downloading -------------------------------------------------------------------------------


def mirrors() -> list[str]:
    configured = [m.strip() for m in os.environ.get(MIRRORS_ENV, "").split(",") if m.strip()]
    if configured:
        return [m if m.endswith("/") else f"{m}/" for m in configured]
    from torchvision.datasets import MNIST  # the official mirrors, kept up to date by torchvision

    return list(MNIST.mirrors)


def set_aside(path: Path) -> Path:
    """Move a bad file out of the way under a new name (it is never deleted: it may be the user's)."""
    kept = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    os.replace(path, kept)
    print(f"digitrec: {path} failed its checksum: kept as {kept.name}, downloading it again", file=sys.stderr, flush=True)
    return kept


def why_download_failed(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        reason = err.reason
        text = getattr(reason, "strerror", None) or str(reason)
        return f"no connection ({text}): no network, or the mirror is unreachable"
    if isinstance(err, TimeoutError):
        return f"no answer within {DOWNLOAD_TIMEOUT_S} s"
    return f"{type(err).__name__}: {first_line(err, 120)}"


def fetch(name: str, raw: Path) -> Path:
    """Download `name`.gz into `raw`: to a temporary name, verified, then renamed."""
    final, failures = raw / f"{name}.gz", []
    for mirror in mirrors():
        url = f"{mirror}{name}.gz"
        temp = raw / f".{name}.gz.part-{os.getpid()}"
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "digitrec"})
            with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response, temp.open("wb") as out:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
            try:
                digest = hashlib.sha256(gzip.decompress(temp.read_bytes())).hexdigest()
            except (OSError, EOFError, gzip.BadGzipFile):
                digest = None
            if digest != SHA256[name]:
                failures.append(f"{url}: the file fails its checksum" + ("" if digest else " (not a complete gzip file)"))
                continue
            os.replace(temp, final)
            return final
        except (urllib.error.URLError, OSError, ValueError) as err:
            failures.append(f"{url}: {why_download_failed(err)}")
        finally:
            temp.unlink(missing_ok=True)  # our own partial download, never a user's file
    raise DigitrecError(f"MNIST download failed: {'; '.join(failures)}; {HOW_TO_PROVIDE}")


def download_mnist(root: str | Path) -> Path:
    """Make `root`/MNIST/raw hold the four verified files, downloading those missing or bad;
    returns that folder. Files already there and good are kept (and not read again)."""
    from filelock import FileLock, Timeout

    raw = Path(root).expanduser() / "MNIST" / "raw"
    try:
        raw.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(raw.parent / ".download.lock"), timeout=30 * 60)
        with lock:
            for name in SHA256:
                for path in (raw / name, raw / f"{name}.gz"):
                    if not path.is_file():
                        continue
                    try:
                        verify_file(path, name)
                        break
                    except DigitrecError:
                        set_aside(path)
                else:
                    verify_file(fetch(name, raw), name)
    except Timeout:
        raise DigitrecError(
            f"another process has been downloading MNIST into {raw} for 30 minutes: wait for it, or remove {lock.lock_file} if none is running"
        ) from None
    except OSError as err:
        raise DigitrecError(
            f"cannot download MNIST into {raw}: {err.strerror or err}; choose a writable paths.data_dir, or {HOW_TO_PROVIDE}"
        ) from None
    return raw
