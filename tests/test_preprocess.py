"""MNIST-style preprocessing: what comes out, and that every kind of image gets there."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from scipy import ndimage

from digitrec.errors import DigitrecError
from digitrec.inference.preprocess import BOX, CENTRE, FIELD, WORK_SIDE, open_image, preprocess
from predict_fixtures import crafted_png, ink_correlation, mnist_digit_png, model_ckpt, predictor  # noqa: F401


@pytest.fixture(scope="module")
def reference(mnist, tmp_path_factory):
    """MNIST test digit 0 (a 7) as a dark-on-light greyscale PNG, and its preprocessed form."""
    path = mnist_digit_png(mnist, 0, tmp_path_factory.mktemp("ref") / "seven.png")
    return Image.open(path).convert("L"), preprocess(path)


def test_output_is_an_mnist_style_image(reference):
    _, out = reference
    assert out.shape == (FIELD, FIELD) and out.dtype == np.float32
    assert out.min() == 0.0 and 0.95 <= out.max() <= 1.0
    rows, cols = np.nonzero(out > 0.05)
    assert max(np.ptp(rows), np.ptp(cols)) + 1 in (BOX, BOX + 1)  # longest side in the 20 px box
    assert np.allclose(ndimage.center_of_mass(out), CENTRE, atol=0.6)


def test_mnist_test_images_lose_no_accuracy(mnist, predictor):
    """MNIST's own digits are already in the target form: preprocessing must not hurt them."""
    images, labels = mnist.test_images[:3000], mnist.test_labels[:3000].numpy()
    raw = np.array([p.digit for p in predictor.classify(images.numpy() / 255.0)])
    prepared = np.stack([preprocess(image) for image in images.numpy()])
    ours = np.array([p.digit for p in predictor.classify(prepared)])
    assert (ours == labels).mean() >= (raw == labels).mean() - 0.002
    assert np.abs(prepared - images.numpy() / 255.0).mean() < 0.01


def test_polarity_is_found_either_way(reference):
    grey, out = reference
    chalk = preprocess(ImageOps.invert(grey))  # light digit on a dark board
    assert ink_correlation(out, chalk) > 0.97


def test_uneven_light_tint_and_coloured_ink(reference):
    grey, out = reference
    alpha = 1 - np.asarray(grey, dtype=np.float32)[..., None] / 235  # ink amount, from the photo
    width = alpha.shape[1]
    light = np.linspace(1.0, 0.55, width, dtype=np.float32)[None, :, None]  # lamp on the left
    paper, ink = np.array([240, 225, 170]), np.array([30, 40, 160])  # yellow paper, blue ink
    photo = ((paper * (1 - alpha) + ink * alpha) * light).clip(0, 255).astype(np.uint8)
    assert ink_correlation(out, preprocess(photo)) > 0.95


def test_ink_only_in_the_alpha_channel(reference):
    grey, out = reference
    alpha = 255 - np.asarray(grey)
    rng = np.random.default_rng(0)
    rgba = np.dstack([rng.integers(0, 256, (*alpha.shape, 3), dtype=np.uint8), alpha])  # garbage colour
    rgba[..., :3][alpha > 100] = 0  # the strokes themselves are black
    assert ink_correlation(out, preprocess(Image.fromarray(rgba))) > 0.95
    white_strokes = rgba.copy()
    white_strokes[..., :3][alpha > 100] = 255  # white ink on a transparent canvas
    assert ink_correlation(out, preprocess(Image.fromarray(white_strokes))) > 0.95


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "I;16", "I", "F"])
def test_every_image_mode(reference, mode):
    grey, out = reference
    if mode == "I;16":
        picture = Image.fromarray(np.asarray(grey, dtype=np.uint16) * 257)
        assert picture.mode == "I;16"
    elif mode == "F":
        picture = Image.fromarray(np.asarray(grey, dtype=np.float32) / 255)
    elif mode == "1":  # bilevel as a scanner makes it: thresholded, with its own reference
        picture = grey.point(lambda v: 255 if v > 128 else 0)
        out = preprocess(picture)
        picture = picture.convert("1")
    else:
        picture = grey.convert(mode)
    assert ink_correlation(out, preprocess(picture)) > 0.97


@pytest.mark.parametrize(("fmt", "suffix"), [("PNG", "png"), ("JPEG", "jpg"), ("GIF", "gif"), ("BMP", "bmp"), ("TIFF", "tif"), ("WEBP", "webp")])
def test_every_file_format(reference, tmp_path, fmt, suffix):
    grey, out = reference
    path = tmp_path / f"seven.{suffix}"
    grey.convert("RGB").save(path, format=fmt)
    assert ink_correlation(out, preprocess(path)) > 0.95


def test_sixteen_bit_png_file(reference, tmp_path):
    grey, out = reference
    path = tmp_path / "deep.png"
    Image.fromarray(np.asarray(grey, dtype=np.uint16) * 257).save(path)
    assert ink_correlation(out, preprocess(path)) > 0.97


def test_exif_orientation_is_applied(reference, tmp_path):
    grey, out = reference
    path = tmp_path / "sideways.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": the pixels are stored turned the other way
    grey.convert("RGB").transpose(Image.Transpose.ROTATE_90).save(path, exif=exif, quality=95)
    assert ink_correlation(out, preprocess(path)) > 0.95


def test_small_digit_off_centre_in_a_large_photo(mnist, predictor, tmp_path):
    """A 4032x3024 phone photo, the digit about 250 px tall near a corner, JPEG noise."""
    rng = np.random.default_rng(1)
    photo = np.full((3024, 4032, 3), (205, 200, 185), dtype=np.float32)
    photo *= np.linspace(1.0, 0.8, 4032, dtype=np.float32)[None, :, None]
    digits = {}
    for index in range(5):
        label = int(mnist.test_labels[index])
        ink = np.asarray(Image.fromarray(mnist.test_images[index].numpy()).resize((250, 250), Image.Resampling.BICUBIC), dtype=np.float32) / 255
        picture = photo.copy()
        top, left = 2500 - 40 * index, 300 + 60 * index
        picture[top : top + 250, left : left + 250] *= 1 - 0.8 * ink[..., None]
        picture += rng.normal(0, 4, picture.shape).astype(np.float32)
        path = tmp_path / f"photo-{index}.jpg"
        Image.fromarray(picture.clip(0, 255).astype(np.uint8)).save(path, quality=80)
        digits[path] = label
    assert open_image(next(iter(digits))).size[0] <= 2 * WORK_SIDE  # decoded at reduced size
    predictions = predictor.predict(list(digits))
    assert [p.digit for p in predictions] == list(digits.values())


def test_huge_jpeg_is_decoded_in_bounded_memory(tmp_path):
    """A 48-megapixel JPEG: preprocessing it must not hold the full-size image in memory."""
    path = tmp_path / "huge.jpg"
    big = Image.new("L", (8000, 6000), 220)
    big.paste(0, (3000, 2000, 3300, 3400))  # a thick bar: a "1"
    big.save(path, quality=70)
    del big
    # VmHWM is this process's own peak (getrusage would report the forking parent's too).
    code = (
        "import re; from pathlib import Path; from digitrec.inference.preprocess import preprocess; "
        f"preprocess({str(path)!r}); "
        "print(re.search(r'VmHWM:\\s+(\\d+)', Path('/proc/self/status').read_text()).group(1))"
    )
    peak_mib = int(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout) / 1024
    # Decoded whole it would peak at about 300 MiB (the libraries alone take about 55 MiB).
    assert peak_mib < 200, f"peak memory {peak_mib:.0f} MiB"


def test_absurdly_large_image_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(crafted_png(30000, 30000))
    with pytest.raises(DigitrecError, match="too large"):
        preprocess(path)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Image.new("RGB", (300, 200), (230, 220, 200)), "no digit found"),
        (lambda: Image.new("L", (1, 1), 255), "too small"),
        (lambda: Image.new("RGBA", (64, 64), (0, 0, 0, 0)), "fully transparent"),
        (lambda: Image.fromarray(np.random.default_rng(0).normal(200, 3, (300, 300)).clip(0, 255).astype(np.uint8)), "no digit found"),
    ],
    ids=["blank", "1x1", "transparent", "paper-noise"],
)
def test_images_without_a_digit(make, message):
    with pytest.raises(DigitrecError, match=message):
        preprocess(make())


def test_a_few_specks_are_not_a_digit():
    page = np.full((800, 800), 230, dtype=np.uint8)
    page[100:103, 200:203] = page[600:602, 500:502] = 20
    with pytest.raises(DigitrecError, match="no digit found"):
        preprocess(page)


def test_arrays_of_any_common_type(reference):
    grey, out = reference
    pixels = np.asarray(grey)
    for array in (pixels, pixels / 255.0, pixels.astype(np.float32) / 255, np.dstack([pixels] * 3), pixels[..., None]):
        assert ink_correlation(out, preprocess(array)) > 0.97
    with pytest.raises(DigitrecError, match=r"\(H, W\)"):
        preprocess(np.zeros((2, 3, 28, 28)))
    assert torch.equal(torch.from_numpy(preprocess(pixels)), torch.from_numpy(preprocess(Image.fromarray(pixels))))


def test_jpeg_bytes_from_memory(reference):
    grey, out = reference
    buffer = io.BytesIO()
    grey.save(buffer, format="JPEG", quality=40)
    assert ink_correlation(out, preprocess(Image.open(buffer))) > 0.95
