"""Pictures of a model's test results, drawn with Pillow as (H, W, 3) uint8 arrays.

Pillow rather than matplotlib: a dependency digitrec already has, and a figure in milliseconds.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WHITE, GREY, INK = (255, 255, 255), (120, 120, 120), (20, 20, 20)


def font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only its small bitmap font
        return ImageFont.load_default()


def confusion_matrix_figure(matrix: np.ndarray, title: str = "test confusion matrix") -> np.ndarray:
    """Counts per (true row, predicted column). Diagonal cells are blue by the share of their row
    that is right; the others red by the share that went wrong there, so mistakes stand out."""
    classes = len(matrix)
    cell, left, top = 40, 64, 70
    size = (left + classes * cell + 16, top + classes * cell + 16)
    picture = Image.new("RGB", size, WHITE)
    draw = ImageDraw.Draw(picture)
    big, small = font(15), font(12)
    draw.text((left, 8), title, fill=INK, font=big)
    draw.text((left, 32), "predicted", fill=GREY, font=small)
    draw.text((6, top + classes * cell // 2 - 8), "true", fill=GREY, font=small)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    for i in range(classes):
        draw.text((left + i * cell + cell // 2 - 4, top - 20), str(i), fill=INK, font=small)
        draw.text((left - 18, top + i * cell + cell // 2 - 7), str(i), fill=INK, font=small)
        for j in range(classes):
            share = float(shares[i, j])
            if i == j:
                colour = tuple(int(255 - share * (255 - c)) for c in (31, 90, 170))
            else:
                strength = min(1.0, share * 10)  # 10% of a row going to one wrong digit is full red
                colour = tuple(int(255 - strength * (255 - c)) for c in (200, 40, 40))
            x, y = left + j * cell, top + i * cell
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=colour, outline=(230, 230, 230))
            dark = (i == j and share > 0.5) or (i != j and share * 10 > 0.6)
            text = str(int(matrix[i, j]))
            width = draw.textlength(text, font=small)
            draw.text((x + (cell - width) / 2, y + cell // 2 - 7), text, fill=WHITE if dark else INK, font=small)
    return np.asarray(picture)


def misclassified_grid(images: np.ndarray, predicted: np.ndarray, true: np.ndarray, total: int, columns: int = 8) -> np.ndarray:
    """Digits (N, 28, 28, uint8) in a grid, each captioned `predicted/true`; `total` mistakes in all."""
    scale, caption, pad = 2, 16, 4
    tile_w, tile_h = 28 * scale + pad, 28 * scale + caption + pad
    rows = max(1, -(-len(images) // columns))
    header = 24
    picture = Image.new("RGB", (columns * tile_w + pad, header + rows * tile_h), WHITE)
    draw = ImageDraw.Draw(picture)
    small = font(12)
    draw.text((pad, 4), f"{len(images)} of {total} misclassified test digits, surest first; labels: predicted/true", fill=INK, font=small)
    for k, (image, p, t) in enumerate(zip(images, predicted, true)):
        x = pad + (k % columns) * tile_w
        y = header + (k // columns) * tile_h
        digit = Image.fromarray(np.asarray(image, dtype=np.uint8)).resize((28 * scale, 28 * scale), Image.Resampling.NEAREST)
        picture.paste(digit.convert("RGB"), (x, y))
        text = f"{int(p)}/{int(t)}"
        width = draw.textlength(text, font=small)
        draw.text((x + (28 * scale - width) / 2, y + 28 * scale + 1), text, fill=(190, 30, 30), font=small)
    return np.asarray(picture)
