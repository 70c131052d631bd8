"""Fine-tuning on "your own handwriting", measured: a writer-shift set, then before/after per model.

The writers are the fonts installed here (benchmarks.foreign_set finds them; 30-40 DejaVu and
Liberation faces on Debian), each written the way the README's weakest foreign kind is (a
low-resolution scan of thick, blurred strokes, the default model's 91%) and with a slant and stroke
weight of its own: shapes MNIST's writers rarely make (closed-top 4s, flagged 1s, serifs, crossed 7s,
mono-spaced zeros), and no MNIST image in it at all. For each N in --per-digit, train_N/ holds N
images per digit to fine-tune on, and test/ holds other images (never trained on) by the same writers.

For each --ckpt and N it runs the real commands and reads their metrics.json:
    digitrec eval  data=folder data.root=SET/test ckpt_path=CKPT                          (before)
    digitrec train data=folder data.root=SET/train_N init_from=CKPT [--recipe overrides]  (fine-tune)
    digitrec eval  data=folder data.root=SET/test ckpt_path=RUN/model.ckpt                 (after)
The fine-tuning run's own test/acc is MNIST's official test set (what it still reads of MNIST).

    python -m benchmarks.handwriting --ckpt outputs/train/runs/<run>/model.ckpt   (make bench-handwriting CKPT=...)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from benchmarks.foreign_set import FONT_DIRS, encoded, load_font, on_paper

# Per digit in the test folder, by the same writers.
TEST_PER_DIGIT = 100


def find_writers() -> list[str]:
    """Every TrueType font installed in the usual folders: one "writer" each."""
    return sorted(str(p) for folder in FONT_DIRS if folder.is_dir() for p in folder.rglob("*.ttf"))


def writer_style(index: int, seed: int) -> dict[str, float]:
    """A writer's own hand: a slant (shear), stroke weight (extra pixels of thickness) and width."""
    rng = np.random.default_rng([seed, 1000 + index])
    return {"slant": rng.uniform(-0.35, 0.35), "weight": int(rng.integers(0, 3)), "width": rng.uniform(0.75, 1.25)}


def written_digit(digit: int, font: str, style: dict[str, float], rng: np.random.Generator) -> Image.Image:
    """One digit by a writer, scanned at low resolution: thick, blurred strokes a few pixels wide."""
    size = 160
    glyph = Image.new("L", (size * 2, size * 2), 0)
    ImageDraw.Draw(glyph).text((size // 2, size // 4), str(digit), fill=255, font=load_font(font, size))
    glyph = glyph.crop(glyph.getbbox())
    # The writer's slant and width, and this sample's wobble around them.
    slant = style["slant"] + rng.uniform(-0.08, 0.08)
    width = max(8, int(glyph.width * style["width"] * rng.uniform(0.92, 1.08)))
    glyph = glyph.resize((width, glyph.height), Image.Resampling.BICUBIC)
    pad = int(abs(slant) * glyph.height) + 4
    glyph = glyph.transform(
        (glyph.width + 2 * pad, glyph.height), Image.Transform.AFFINE, (1, slant, -pad - slant * glyph.height / 2, 0, 1, 0), Image.Resampling.BICUBIC
    )
    glyph = glyph.crop(glyph.getbbox()).rotate(rng.uniform(-4, 4), Image.Resampling.BICUBIC, expand=True)
    # Scanned small: the digit 28-45 px tall, its strokes thickened by the writer's pen, then blurred.
    height = int(rng.uniform(28, 45))
    glyph = glyph.resize((max(6, round(glyph.width * height / glyph.height)), height), Image.Resampling.LANCZOS)
    for _ in range(int(style["weight"])):
        glyph = glyph.filter(ImageFilter.MaxFilter(3))
    glyph = glyph.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.0)))
    return on_paper(glyph, rng, margin=(1.3, 2.0), palest_paper=195, darkest_ink=70)


def write_folder(folder: Path, per_digit: int, writers: list[str], seed: int, stream: int) -> None:
    """per_digit images of each digit in folder/0/ ... folder/9/, the writers taken in turn."""
    for digit in range(10):
        rng = np.random.default_rng([seed, stream, digit])
        (folder / str(digit)).mkdir(parents=True, exist_ok=True)
        for i in range(per_digit):
            writer = (i * 7 + digit) % len(writers)
            image = written_digit(digit, writers[writer], writer_style(writer, seed), rng)
            fmt = "JPEG" if i % 3 == 2 else "PNG"  # some of a writer's samples as phone-camera JPEGs
            (folder / str(digit) / f"w{writer:02d}-{i:03d}.{'jpg' if fmt == 'JPEG' else 'png'}").write_bytes(encoded(image, fmt, rng))


def make_set(out: Path, per_digit: list[int], seed: int = 0, test_per_digit: int = TEST_PER_DIGIT) -> list[str]:
    """train_N/ for each N (nested: train_10 is the first 10 of train_100's writers' turns) and test/."""
    writers = find_writers()
    if not writers:
        raise SystemExit("no TrueType fonts found (apt-get install fonts-dejavu-core fonts-liberation2)")
    for n in per_digit:
        write_folder(out / f"train_{n}", n, writers, seed, stream=1)
    write_folder(out / "test", test_per_digit, writers, seed, stream=2)
    return writers


def digitrec(*args: str) -> None:
    """The real command, as a user runs it; its output goes to our stderr."""
    command = [sys.executable, "-m", "digitrec", *args, "progress=lines"]
    done = subprocess.run(command, stdout=sys.stderr, stderr=sys.stderr, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}")


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def evaluate(ckpt: Path, folder: Path, run_dir: Path) -> float:
    digitrec("eval", f"ckpt_path={ckpt}", "data=folder", f"data.root={folder}", f"hydra.run.dir={run_dir}")
    return metrics(run_dir)["test/acc"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", action="append", required=True, help="a model.ckpt to fine-tune (repeat for several models)")
    parser.add_argument("--per-digit", type=int, nargs="+", default=[10, 30, 100], help="images per digit to fine-tune on")
    parser.add_argument("--recipe", default="", help="overrides added to the fine-tuning command (default: none, the config's defaults)")
    parser.add_argument("--out", type=Path, default=Path("outputs/handwriting"), help="where the set and the runs go")
    parser.add_argument("--seed", type=int, default=0, help="the set's seed")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    data = args.out / "set"
    started = time.perf_counter()
    writers = make_set(data, args.per_digit, args.seed)
    print(
        f"set: {len(writers)} writers, {args.per_digit} per digit to fine-tune on, {TEST_PER_DIGIT} per digit to test, "
        f"made in {time.perf_counter() - started:.0f} s",
        file=sys.stderr,
    )
    rows = []
    for c, ckpt in enumerate(map(Path, args.ckpt)):
        before = evaluate(ckpt, data / "test", args.out / f"m{c}_before")
        for n in args.per_digit:
            run = args.out / f"m{c}_finetune_{n}"
            digitrec("train", "data=folder", f"data.root={data / f'train_{n}'}", f"init_from={ckpt}", f"hydra.run.dir={run}", *args.recipe.split())
            tuned = metrics(run)
            after = evaluate(run / "model.ckpt", data / "test", args.out / f"m{c}_after_{n}")
            rows.append(
                {
                    "ckpt": str(ckpt),
                    "per_digit": n,
                    "before": before,
                    "after": after,
                    "mnist_after": tuned["test/acc"],
                    "train_seconds": tuned["train_seconds"],
                    "epochs": tuned["epochs"],
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr)
    print("| model | per digit | writers' test folder before | after | MNIST test/acc after | fine-tuning time |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['ckpt']} | {row['per_digit']} | {row['before']:.2%} | **{row['after']:.2%}** | {row['mnist_after']:.2%} | {row['train_seconds']:.0f} s |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
