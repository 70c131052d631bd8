"""Any image of a digit -> the 28x28 input the model was trained on, made the way MNIST was made.

MNIST digits are white on black, size-normalised to fit a 20x20 box (aspect kept, anti-aliased)
and centred by centre of mass in a 28x28 field. Photos and scans are none of that, so:

1. read: any Pillow image, EXIF orientation applied, large ones decoded at reduced size;
2. flatten: composite transparency, then subtract a smooth background fitted to the image
   (uneven lighting, paper tint), leaving how far each pixel is from the paper;
3. ink: project that difference on the ink's own colour direction, which also decides the
   polarity (dark ink on paper, chalk on a board, coloured ink) without guessing;
4. find the digit: threshold, connected components, keep the main one and its nearby parts;
5. normalise: crop, thicken pen-thin strokes to MNIST's stroke width, scale the longest side to
   20 px, restore MNIST's stroke contrast, paste with the centre of mass at MNIST's centre.

Errors a user's file can cause raise DigitrecError with one line saying what is wrong.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

from digitrec.errors import DigitrecError, first_line

ImageLike = str | Path | Image.Image | np.ndarray

FIELD = 28  # MNIST's image side
BOX = 20  # the digit's longest side inside it
# Mean centre of mass of the MNIST training digits, in (row, column) pixel indices.
CENTRE = (14.0, 14.0)
# Stroke widths in pixels of the 20 px box (2 * area / perimeter of the pixels above 0.5).
# MNIST's are 1.4 / 1.9 / 2.7 (10th / 50th / 90th percentile); strokes thinner than nearly all
# of MNIST's (a fine pen, a digit written small on a large page) are thickened, which measured
# best on thin-pen photos when made a little bolder than MNIST's median.
THIN_STROKE = 1.5
TARGET_STROKE = 2.3

# Resampling (and a camera) leaves the strokes softer than MNIST's, whose cores are saturated and
# whose rims are a pixel wide: after scaling, ink below CLEAR is cleared and ink above SOLID made
# solid. On the foreign-image set (benchmarks/foreign_images.py) this gained about 0.5 % on
# photos and cost nothing on fonts; matching MNIST's whole intensity histogram instead gained as much
# on photos but lost 1.5 % on fonts.
CLEAR, SOLID = 0.1, 0.8

MAX_PIXELS = 50_000_000  # after reduced-size JPEG decoding; bounds memory on huge images
WORK_SIDE = 1024  # images are analysed at most this large: enough for a digit a few % of a photo
MIN_SIDE = 8  # smaller than this cannot hold a recognisable digit
DETAIL = 4  # crops are normalised at DETAIL x the 20 px box before the final downscale


def preprocess(image: ImageLike) -> np.ndarray:
    """An image file path, PIL image or array -> float32 (28, 28) in [0, 1], white digit on black.

    Arrays are (H, W) grey or (H, W, 3|4) RGB(A), uint8 in [0, 255] or float in [0, 1].
    Raises DigitrecError when the file cannot be read or holds no digit.
    """
    picture = open_image(image) if isinstance(image, (str, Path)) else as_pil(image)
    rgb = flatten_transparency(working_copy(picture))
    return normalise_digit(find_digit(ink_map(rgb)))


# --- 1. read ---------------------------------------------------------------------------------


def open_image(path: str | Path) -> Image.Image:
    """Decode an image file, oriented as its EXIF says, at no more than about WORK_SIDE pixels."""
    path = Path(path)
    if not path.exists():
        raise DigitrecError("no such file")
    if path.is_dir():
        raise DigitrecError("is a directory, not an image file")
    if path.stat().st_size == 0:
        raise DigitrecError("the file is empty")
    try:
        with warnings.catch_warnings():
            # Size is checked below, against the decoded size; Pillow's own warning would be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            picture = Image.open(path)
        with picture:
            width, height = picture.size
            if picture.format == "JPEG" and max(width, height) > WORK_SIDE:
                # JPEG can decode at 1/2, 1/4 or 1/8 size: a 48 MP photo never sits in memory whole.
                scale = WORK_SIDE / max(width, height)
                picture.draft(None, (max(1, int(width * scale)), max(1, int(height * scale))))
            check_size(*picture.size, original=(width, height))
            picture.load()
            return ImageOps.exif_transpose(picture)  # a copy: the file can be closed
    except Image.DecompressionBombError:
        raise DigitrecError(f"the image is too large: digitrec reads images up to {MAX_PIXELS // 1_000_000} megapixels") from None
    except UnidentifiedImageError:
        raise DigitrecError("not an image file Pillow can read (PNG, JPEG, GIF, BMP, TIFF, WebP, ...)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        detail = first_line(err, 120)
        raise DigitrecError(f"the image is truncated or corrupt ({detail})") from None


def check_size(width: int, height: int, original: tuple[int, int] | None = None) -> None:
    if width * height > MAX_PIXELS:
        w, h = original or (width, height)
        raise DigitrecError(
            f"the image is too large ({w}x{h} pixels): digitrec reads images up to {MAX_PIXELS // 1_000_000} megapixels; downscale it first"
        )
    if min(width, height) < MIN_SIDE:
        raise DigitrecError(f"the image is {width}x{height} pixels: too small to hold a digit (at least {MIN_SIDE}x{MIN_SIDE})")


def as_pil(image: Image.Image | np.ndarray) -> Image.Image:
    """A PIL image or an array as a PIL image, with array values brought to 8 bits or float."""
    if isinstance(image, Image.Image):
        check_size(*image.size)
        return image
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise DigitrecError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4), not {array.shape}")
    check_size(array.shape[1], array.shape[0])
    if array.ndim == 2:
        return Image.fromarray(to_unit(array).astype(np.float32))
    return Image.fromarray(np.round(to_unit(array) * 255).astype(np.uint8))


def to_unit(values: np.ndarray) -> np.ndarray:
    """Pixel values of any numeric type scaled to [0, 1] by their type's natural range."""
    values = np.asarray(values)
    if values.dtype == np.bool_:
        return values.astype(np.float32)
    if values.dtype == np.uint8:
        return values.astype(np.float32) / 255.0
    values = values.astype(np.float32)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros_like(values)
    low, high = float(values[finite].min()), float(values[finite].max())
    values = np.where(finite, values, low)
    for top in (1.0, 255.0, 65535.0):
        if low >= 0 and high <= top:
            return values / top
    # No natural range (e.g. 32-bit or float data of any scale): stretch what is there.
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def working_copy(picture: Image.Image) -> Image.Image:
    """The image in a mode with 8-bit RGB(A) or float grey, at most WORK_SIDE on its long side."""
    if picture.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # Pillow's own conversion to 8 bits clips these modes; scale by their real range instead.
        picture = Image.fromarray(to_unit(np.asarray(picture)))
    elif "A" in picture.mode or "a" in picture.mode or "transparency" in picture.info:
        picture = picture.convert("RGBA")
    elif picture.mode != "RGB":
        picture = picture.convert("RGB")
    if max(picture.size) > WORK_SIDE:
        scale = WORK_SIDE / max(picture.size)
        size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        # Box filtering averages every source pixel: thin strokes fade but never vanish.
        picture = picture.resize(size, Image.Resampling.BOX)
    return picture


# --- 2. flatten ------------------------------------------------------------------------------


def flatten_transparency(picture: Image.Image) -> np.ndarray:
    """(H, W, 3) float RGB in [0, 1]; transparent parts filled so the ink still stands out.

    Ink may live only in the alpha channel (opaque strokes on a transparent canvas, whatever
    the colour values under the transparent part). When the opaque part is the minority it is
    the ink, and the transparent part becomes the opposite of its brightness; when it is the
    majority it is the paper, and the transparent part takes the paper's colour.
    """
    if picture.mode == "F":
        grey = np.asarray(picture, dtype=np.float32)
        return np.repeat(grey[:, :, None], 3, axis=2)
    array = np.asarray(picture, dtype=np.float32) / 255.0
    if picture.mode != "RGBA":
        return array
    rgb, alpha = array[:, :, :3], array[:, :, 3:]
    opaque = alpha[:, :, 0] > 0.5
    if opaque.all():
        return rgb
    if not opaque.any():
        raise DigitrecError("no digit found: the image is fully transparent")
    if opaque.mean() < 0.5:
        brightness = float(rgb[opaque].mean())
        fill = np.full(3, 0.0 if brightness > 0.5 else 1.0, dtype=np.float32)
    else:
        fill = np.median(rgb[opaque], axis=0).astype(np.float32)
    return rgb * alpha + fill * (1.0 - alpha)


def fit_background(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """A smooth (quadratic) background per channel fitted robustly, and the noise around it.

    Starts from the median colour (the paper covers most of any picture of a digit, more than a
    desk at its edges), then refits on every pixel that is not an outlier, so the ink (a
    minority) never pulls the surface towards it.
    """
    height, width, _ = rgb.shape
    step = max(1, int(np.sqrt(height * width / 10_000)))  # about 10k samples, strided
    ys = np.linspace(-1, 1, height, dtype=np.float32)
    xs = np.linspace(-1, 1, width, dtype=np.float32)
    rows, cols = np.mgrid[0:height:step, 0:width:step]
    samples = rgb[rows, cols].reshape(-1, 3)
    y, x = ys[rows.ravel()], xs[cols.ravel()]
    design = np.stack([np.ones_like(x), y, y * y, x, x * y, x * x], axis=1)

    start = np.median(samples, axis=0)
    residual = np.linalg.norm(samples - start, axis=1)
    noise = robust_sigma(residual)
    inliers = residual <= max(3 * noise, 0.04)
    coeffs = np.zeros((6, 3), dtype=np.float32)
    coeffs[0] = start
    for _ in range(3):
        if inliers.sum() < 12:
            break
        a = design[inliers]
        # Normal equations of a 6-term fit; the tiny ridge keeps degenerate layouts solvable.
        coeffs = np.linalg.solve(a.T @ a + 1e-6 * np.eye(6, dtype=np.float32), a.T @ samples[inliers])
        residual = np.linalg.norm(samples - design @ coeffs, axis=1)
        noise = robust_sigma(residual[inliers])
        inliers = residual <= max(3 * noise, 0.04)

    # The quadratic as separable factors: background[c] = [1, y, y^2] @ C_c @ [1, x, x^2]^T.
    powers_y = np.stack([np.ones_like(ys), ys, ys * ys], axis=1)
    powers_x = np.stack([np.ones_like(xs), xs, xs * xs], axis=1)
    background = np.empty_like(rgb)
    for c in range(3):
        c0, cy, cyy, cx, cxy, cxx = coeffs[:, c]
        table = np.array([[c0, cx, cxx], [cy, cxy, 0], [cyy, 0, 0]], dtype=np.float32)
        background[:, :, c] = powers_y @ table @ powers_x.T
    return background, noise


def robust_sigma(values: np.ndarray) -> float:
    if values.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


# --- 3. ink ----------------------------------------------------------------------------------


def ink_map(rgb: np.ndarray) -> np.ndarray:
    """How much ink each pixel holds, >= 0, in units where the digit's strokes are about 1.

    The ink's colour direction is the mean difference from the background over the pixels that
    differ most; projecting on it picks dark-on-light or light-on-dark, and any ink colour.
    """
    background, noise = fit_background(rgb)
    difference = rgb - background
    distance = np.linalg.norm(difference, axis=2)
    strong_floor = max(6 * noise, 0.12)
    strong = distance > strong_floor
    if not strong.any():
        raise DigitrecError("no digit found: nothing stands out from the background (blank image?)")
    direction = difference[strong].sum(axis=0)
    direction /= np.linalg.norm(direction) + 1e-12
    ink = np.maximum(difference @ direction.astype(np.float32), 0.0)
    inked = ink[strong & (ink > strong_floor * 0.5)]
    if inked.size == 0:
        raise DigitrecError("no digit found: nothing stands out from the background (blank image?)")
    # Stroke cores: a high percentile of the clearly inked pixels, robust to a few glints.
    core = float(np.percentile(inked, 75))
    floor = min(3 * noise, 0.3 * core)
    return np.clip((ink - floor) / (core - floor), 0.0, None).astype(np.float32)


# --- 4. find the digit -----------------------------------------------------------------------


def find_digit(ink: np.ndarray) -> np.ndarray:
    """The crop of the ink map that holds the digit: the main blob and the parts near it."""
    keep = select_digit(ink > 0.4, ink)
    level = float(np.percentile(ink[keep], 75))
    if level < 0.7:
        # Something stronger than the digit set the ink scale (a dark desk beside the sheet, a
        # shadow): rescale to the digit's own strokes and look again, so none of them is lost.
        ink = ink / level
        keep = select_digit(ink > 0.4, ink)
    # The faint anti-aliased rim around the strokes belongs to the digit as well.
    keep = ndimage.binary_dilation(keep, structure=np.ones((3, 3)), iterations=2)
    digit = np.where(keep, np.minimum(ink, 1.0), 0.0)
    rows, cols = np.nonzero(digit > 0.05)
    return digit[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def select_digit(mask: np.ndarray, ink: np.ndarray) -> np.ndarray:
    """The blobs of `mask` that make the digit: the heaviest one and those close to it."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    if count == 0:
        raise DigitrecError("no digit found: nothing stands out from the background (blank image?)")
    mass = ndimage.sum_labels(ink, labels, np.arange(1, count + 1))
    boxes = [box_edges(b) for b in ndimage.find_objects(labels)]
    height, width = ink.shape
    touches = np.array([top == 0 or left == 0 or bottom == height or right == width for top, bottom, left, right in boxes])
    extent = np.array([max(bottom - top, right - left) for top, bottom, left, right in boxes])
    # A blob cut by the image edge is more likely a desk, a shadow or the edge of the sheet than
    # the digit: prefer blobs clear of the edges that are big enough to be a digit, unless there
    # are none (a tightly cropped digit touches the edges itself).
    clear = ~touches & (extent >= max(4, 0.02 * max(height, width)))
    if touches.any():
        clear &= mass >= 0.01 * mass[touches].max()
    pool = clear if clear.any() else np.ones(count, dtype=bool)
    main = int(np.argmax(np.where(pool, mass, -1)))
    top, bottom, left, right = boxes[main]
    chosen = {main}
    grown = True
    while grown:
        grown = False
        reach = 0.25 * max(bottom - top, right - left)
        for i in np.argsort(-mass):
            if i in chosen or (touches[i] and not touches[main]) or mass[i] < 0.03 * mass[main]:
                continue
            t, b, lf, r = boxes[i]
            if max(t - bottom, top - b, lf - right, left - r, 0) <= reach:
                chosen.add(int(i))
                top, bottom, left, right = min(top, t), max(bottom, b), min(left, lf), max(right, r)
                grown = True
    if max(bottom - top, right - left) < max(4, 0.015 * max(height, width)):
        raise DigitrecError("no digit found: only specks stand out from the background")
    return np.isin(labels, [i + 1 for i in chosen])


def box_edges(box: tuple[slice, slice]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a find_objects box, bottom and right exclusive."""
    return box[0].start, box[0].stop, box[1].start, box[1].stop


# --- 5. normalise ----------------------------------------------------------------------------


def normalise_digit(crop: np.ndarray) -> np.ndarray:
    """Scale the digit's longest side to 20 px (aspect kept) and centre its mass in 28x28."""
    if max(crop.shape) != BOX:  # a digit already 20 px (MNIST's own) is left as it is
        crop = thicken_thin_strokes(resize(crop, DETAIL * BOX))
        crop = restore_contrast(resize(crop, BOX))
    field = np.zeros((FIELD, FIELD), dtype=np.float32)
    mass_row, mass_col = ndimage.center_of_mass(crop)
    top = int(round(CENTRE[0] - mass_row))
    left = int(round(CENTRE[1] - mass_col))
    # A lopsided digit may not fit once its mass is centred; keep what lands in the field.
    top = min(max(top, 0), FIELD - crop.shape[0])
    left = min(max(left, 0), FIELD - crop.shape[1])
    field[top : top + crop.shape[0], left : left + crop.shape[1]] = crop
    return field


def resize(crop: np.ndarray, longest: int) -> np.ndarray:
    """Resize a float image so its longest side is `longest`, aspect kept, anti-aliased."""
    height, width = crop.shape
    scale = longest / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    picture = Image.fromarray(crop.astype(np.float32)).resize(size, Image.Resampling.LANCZOS)
    return np.clip(np.asarray(picture, dtype=np.float32), 0.0, 1.0)


def restore_contrast(crop: np.ndarray) -> np.ndarray:
    return np.clip((crop - CLEAR) / (SOLID - CLEAR), 0.0, 1.0)


def thicken_thin_strokes(crop: np.ndarray) -> np.ndarray:
    """Dilate strokes far thinner than MNIST's (pen on a large page) up to MNIST's width."""
    width = stroke_width(crop > 0.5) * BOX / max(crop.shape)
    if width >= THIN_STROKE:
        return crop
    radius = (TARGET_STROKE - width) / 2 * max(crop.shape) / BOX
    size = 2 * int(round(radius)) + 1
    if size < 3:
        return crop
    disk = np.hypot(*np.mgrid[-(size // 2) : size // 2 + 1, -(size // 2) : size // 2 + 1]) <= size / 2
    return ndimage.grey_dilation(crop, footprint=disk)


def stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width of a binary drawing: twice its area over its perimeter."""
    area = mask.sum()
    perimeter = np.count_nonzero(mask[1:] != mask[:-1]) + np.count_nonzero(mask[:, 1:] != mask[:, :-1])
    perimeter += np.count_nonzero(mask[[0, -1], :]) + np.count_nonzero(mask[:, [0, -1]])
    return float(2 * area / perimeter) if perimeter else 0.0
