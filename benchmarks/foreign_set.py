"""A reproducible set of foreign (non-MNIST-looking) digit images, for tests and benchmarks.

Two sources anyone can regenerate from a seed:
- MNIST test digits (writers never seen in training) turned into photos and scans: dark ink on
  tinted paper, off-centre on a larger canvas, uneven light, blur, noise, mild rotation, saved
  as PNG, JPEG or RGBA with the digit only in the alpha channel;
- digits rendered from fonts: Pillow's built-in font (always there) and common Debian fonts
  where installed (fonts-dejavu-core, fonts-liberation2, fonts-freefont-ttf).

Each variant is written as real files, so a reader goes through the same decoding as a user's.
`naive_preprocess` is the tutorial's way (resize to 28x28, invert), the baseline to beat.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

MNIST_VARIANTS = ("dark_on_light", "jpeg", "rgba", "colour_ink", "chalk", "tilted", "thin_pen", "sheet_on_desk", "thick_scan")
# Degrees of rotation, either way: a photo taken by hand, and one taken carelessly.
MILD_TILT, TILT = 5, 12
# Font files looked for in the usual Debian folders; the built-in font is always added.
FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSansMono.ttf",
    "LiberationSans-Regular.ttf",
    "LiberationSerif-Regular.ttf",
    "LiberationMono-Regular.ttf",
    "FreeSans.ttf",
    "FreeSerif.ttf",
    "FreeMono.ttf",
)
FONT_DIRS = (Path("/usr/share/fonts/truetype"), Path("/usr/share/fonts/TTF"), Path("/usr/local/share/fonts"))
BUILTIN_FONT = "pillow-builtin"


def mnist_photo(digit: np.ndarray, variant: str, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """One MNIST digit (uint8 28x28, white on black) as a photo of ink on paper, and its format."""
    # thick_scan: a low-resolution scan (1-1.6x MNIST's size), so a stroke is a few pixels wide.
    scale = rng.uniform(1.0, 1.6) if variant == "thick_scan" else rng.uniform(3, 8)
    side = int(28 * scale)
    tilt = TILT if variant == "tilted" else MILD_TILT
    ink = Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC)
    if variant == "thin_pen":
        # A fine pen: strokes a third of MNIST's width, as when a digit is written small.
        ink = ink.filter(ImageFilter.MinFilter(2 * int(scale * 0.6) + 1)).filter(ImageFilter.GaussianBlur(0.5))
    if variant == "thick_scan":
        # A felt-tip digit: strokes thickened by a pixel each side, then blurred by the scanner.
        ink = ink.filter(ImageFilter.MaxFilter(3)).filter(ImageFilter.GaussianBlur(0.8))
    ink = ink.rotate(rng.uniform(-tilt, tilt), Image.Resampling.BICUBIC, expand=True)
    width, height = (int(ink.width * rng.uniform(1.3, 2.5)) for _ in range(2))
    left, top = int(rng.uniform(0, width - ink.width)), int(rng.uniform(0, height - ink.height))
    alpha = np.zeros((height, width), dtype=np.float32)
    alpha[top : top + ink.height, left : left + ink.width] = np.asarray(ink, dtype=np.float32) / 255.0

    if variant == "rgba":
        # Opaque black strokes on a fully transparent canvas: the digit is only in the alpha.
        rgba = np.zeros((height, width, 4), dtype=np.uint8)
        rgba[:, :, 3] = np.round(alpha * 255).astype(np.uint8)
        return Image.fromarray(rgba), "PNG"

    paper = rng.uniform(190, 250) - rng.uniform(0, 35, size=3)  # tinted: cream, grey, bluish
    ink_colour = rng.uniform(10, 70, size=3)
    if variant == "colour_ink":
        ink_colour = [(30, 50, 170), (170, 30, 40), (20, 110, 50)][rng.integers(3)] + rng.uniform(-20, 20, size=3)
    if variant == "chalk":
        paper, ink_colour = rng.uniform(25, 70, size=3), rng.uniform(200, 245, size=3)
    # Light falling off across the sheet, as under a desk lamp.
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xs / width + np.sin(angle) * ys / height + 1) / 2
    light = 1.0 - rng.uniform(0.05, 0.3) * ramp
    pixels = (paper * (1 - alpha[..., None]) + np.asarray(ink_colour) * alpha[..., None]) * light[..., None]
    if variant == "sheet_on_desk":
        pixels = on_desk(pixels, rng)
    pixels += rng.normal(0, rng.uniform(1, 5), size=pixels.shape)
    photo = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    photo = photo.filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.15) * scale))
    return photo, ("JPEG" if variant == "jpeg" else "PNG")


def on_desk(sheet: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The sheet photographed with a dark desk showing along one or two of its edges."""
    height, width, _ = sheet.shape
    pad_x, pad_y = int(width * rng.uniform(0.1, 0.4)), int(height * rng.uniform(0, 0.4))
    desk = np.empty((height + pad_y, width + pad_x, 3), dtype=np.float32)
    desk[:] = rng.uniform(30, 100, size=3)
    top, left = pad_y * int(rng.integers(2)), pad_x * int(rng.integers(2))
    desk[top : top + height, left : left + width] = sheet
    return desk


def find_fonts() -> list[str]:
    """The font files of FONT_FILES installed here, plus the built-in font (always present)."""
    found = []
    for name in FONT_FILES:
        for folder in FONT_DIRS:
            hits = sorted(folder.rglob(name)) if folder.is_dir() else []
            if hits:
                found.append(str(hits[0]))
                break
    return [BUILTIN_FONT, *found]


def load_font(font: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size) if font == BUILTIN_FONT else ImageFont.truetype(font, size)


def font_digit(digit: int, font: str, rng: np.random.Generator) -> Image.Image:
    """A digit typed in a font, dark on tinted paper, off-centre, slightly rotated and noisy."""
    size = int(rng.uniform(40, 160))
    glyph = Image.new("L", (size * 2, size * 2), 0)
    ImageDraw.Draw(glyph).text((size // 2, size // 4), str(digit), fill=255, font=load_font(font, size))
    glyph = glyph.crop(glyph.getbbox()).rotate(rng.uniform(-6, 6), Image.Resampling.BICUBIC, expand=True)
    return on_paper(glyph, rng, margin=(1.4, 3.0), palest_paper=200, darkest_ink=80)


def on_paper(glyph: Image.Image, rng: np.random.Generator, margin: tuple[float, float], palest_paper: float, darkest_ink: float) -> Image.Image:
    """A white-on-black glyph as dark ink on tinted paper: off-centre on a canvas `margin` times its
    size, paper between palest_paper and 250 (less a tint per channel), ink up to darkest_ink, and noise."""
    width, height = (int(max(glyph.size) * rng.uniform(*margin)) for _ in range(2))
    canvas = Image.new("L", (width, height), 0)
    canvas.paste(glyph, (int(rng.uniform(0, width - glyph.width)), int(rng.uniform(0, height - glyph.height))))
    alpha = np.asarray(canvas, dtype=np.float32)[..., None] / 255.0
    paper, ink = rng.uniform(palest_paper, 250) - rng.uniform(0, 30, size=3), rng.uniform(0, darkest_ink, size=3)
    pixels = paper * (1 - alpha) + ink * alpha + rng.normal(0, 3, size=(*alpha.shape[:2], 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def encoded(image: Image.Image, fmt: str, rng: np.random.Generator) -> bytes:
    buffer = io.BytesIO()
    # PNG at the fastest compression: the pixels are the same, and tests write hundreds.
    options = {"quality": int(rng.uniform(40, 90))} if fmt == "JPEG" else {"compress_level": 1}
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def write_mnist_photos(folder: Path, images: np.ndarray, labels: np.ndarray, variant: str, seed: int = 0) -> list[tuple[Path, int]]:
    """Write one photo file per MNIST digit into `folder`; returns (path, label) pairs."""
    rng = np.random.default_rng([seed, MNIST_VARIANTS.index(variant)])
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (digit, label) in enumerate(zip(images, labels)):
        photo, fmt = mnist_photo(np.asarray(digit, dtype=np.uint8), variant, rng)
        path = folder / f"{variant}-{i:05d}.{'jpg' if fmt == 'JPEG' else 'png'}"
        path.write_bytes(encoded(photo, fmt, rng))
        written.append((path, int(label)))
    return written


def write_font_digits(folder: Path, fonts: list[str], copies: int = 3, seed: int = 0) -> list[tuple[Path, int, str]]:
    """Write `copies` JPEG photos of each digit in each font; returns (path, label, font) triples."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for f, font in enumerate(fonts):
        rng = np.random.default_rng([seed, f])
        for copy in range(copies):
            for digit in range(10):
                path = folder / f"{Path(font).stem}-{digit}-{copy}.jpg"
                path.write_bytes(encoded(font_digit(digit, font, rng), "JPEG", rng))
                written.append((path, digit, Path(font).stem))
    return written


def iter_images(paths: list[Path]) -> Iterator[Image.Image]:
    for path in paths:
        with Image.open(path) as image:
            image.load()
            yield image


def naive_preprocess(image: Image.Image) -> np.ndarray:
    """The tutorial's way: greyscale, squash to 28x28, invert. float32 (28, 28) in [0, 1]."""
    grey = image.convert("L").resize((28, 28), Image.Resampling.BILINEAR)
    return 1.0 - np.asarray(grey, dtype=np.float32) / 255.0
