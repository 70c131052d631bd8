"""Data augmentation of training batches: a random affine warp and elastic distortion per image.

Batched on the training device: one random transform per image, all applied by a single
`grid_sample` call on the whole batch, with no per-image Python loop. Affine and elastic parts are
composed into one sampling grid, so each image is interpolated once (two warps in a row, as
kornia's or torchvision's separate transforms would do, blur it twice and cost twice as much).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from digitrec.nets.networks import as_unit_float


def _uniform(n: int, low: float, high: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device) * (high - low) + low


def affine_grid(matrices: torch.Tensor, size: int) -> torch.Tensor:
    """F.affine_grid(matrices, [n, 1, size, size], align_corners=False), as six broadcast multiply-adds.

    The same sampling grid (to float rounding) at a fraction of the cost: affine_grid multiplies every
    pixel's (x, y, 1) by the matrix in a batched matmul of inner size 3, which on a CPU took over half
    of the whole warp (make bench, "Augmentation")."""
    centres = (torch.arange(size, device=matrices.device, dtype=matrices.dtype) * 2 + 1) / size - 1  # pixel centres in [-1, 1]
    x, y = centres.view(1, 1, size), centres.view(1, size, 1)
    m = matrices.view(-1, 6, 1, 1)
    grid = torch.empty(len(matrices), size, size, 2, device=matrices.device, dtype=matrices.dtype)
    # Each output coordinate is (a row's part) + (a column's part): small tensors, one full-size add each.
    torch.add(m[:, 0] * x + m[:, 2], m[:, 1] * y, out=grid[..., 0])
    torch.add(m[:, 3] * x + m[:, 5], m[:, 4] * y, out=grid[..., 1])
    return grid


class RandomWarp:
    """Random rotation, scale, shear and translation per image, plus elastic distortion as in
    Simard et al. 2003 (a random displacement field smoothed by a Gaussian of `elastic_sigma` pixels,
    scaled by `elastic_alpha` pixels; `elastic_alpha: 0` turns it off).

    Takes (N, 28, 28) or (N, 1, 28, 28) images, uint8 in [0, 255] or float in [0, 1]; returns float
    images in [0, 1] of shape (N, 28, 28). Labels are untouched: every warp keeps a digit's class.
    """

    def __init__(
        self,
        degrees: float = 10.0,
        scale: Sequence[float] = (0.9, 1.1),
        shear: float = 10.0,
        translate: float = 0.1,
        elastic_alpha: float = 0.0,
        elastic_sigma: float = 4.0,
        p: float = 1.0,
    ) -> None:
        self.degrees, self.scale, self.shear, self.translate = float(degrees), (float(scale[0]), float(scale[1])), float(shear), float(translate)
        self.elastic_alpha, self.elastic_sigma, self.p = float(elastic_alpha), float(elastic_sigma), float(p)
        self._kernels: dict[tuple, torch.Tensor] = {}

    def __repr__(self) -> str:
        return (
            f"RandomWarp(degrees={self.degrees:g}, scale={self.scale}, shear={self.shear:g}, translate={self.translate:g}, "
            f"elastic_alpha={self.elastic_alpha:g}, elastic_sigma={self.elastic_sigma:g}, p={self.p:g})"
        )

    def affine_matrices(self, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """(n, 2, 3) matrices mapping output to input coordinates in affine_grid's [-1, 1] frame."""
        return self._affine_and_kept(n, generator, device)[0]

    def _affine_and_kept(self, n: int, generator: torch.Generator, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The matrices, and which images are left as they are (None when p is 1: all are warped)."""
        angle = _uniform(n, -self.degrees, self.degrees, generator, device) * (math.pi / 180)
        shear = _uniform(n, -self.shear, self.shear, generator, device) * (math.pi / 180)
        scale = _uniform(n, *self.scale, generator, device)
        shift = _uniform(2 * n, -self.translate, self.translate, generator, device).view(n, 2) * 2  # a share of the width
        cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
        # Forward transform A = R(angle) @ Shear_x(shear) * scale; the grid needs its inverse.
        a = torch.stack([torch.stack([cos, cos * tan - sin], 1), torch.stack([sin, sin * tan + cos], 1)], 1) * scale.view(n, 1, 1)
        inverse = torch.linalg.inv(a)
        keep = None
        if self.p < 1:  # images left as they are get the identity
            keep = torch.rand(n, generator=generator, device=device) >= self.p
            inverse[keep] = torch.eye(2, device=device)
            shift[keep] = 0
        return torch.cat([inverse, -(inverse @ shift.unsqueeze(2))], dim=2), keep

    def _smoothing_matrix(self, size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The Gaussian blur along one axis (reflected at the borders) as a (size, size) matrix: the
        whole batch's field is then blurred by two batched matmuls, some 50 times faster on a CPU
        than a 1-channel convolution with a kernel this wide."""
        key = (size, device, dtype)
        if key not in self._kernels:
            radius = max(1, round(3 * self.elastic_sigma))
            offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
            kernel = torch.exp(-(offsets**2) / (2 * self.elastic_sigma**2))
            kernel /= kernel.sum()
            matrix = torch.zeros(size, size, dtype=torch.float64)
            period = 2 * size - 2 if size > 1 else 1
            for i in range(size):
                for offset, weight in zip(range(-radius, radius + 1), kernel.tolist()):
                    j = (i + offset) % period  # reflect padding: ... 2 1 | 0 1 2 ... n-1 | n-2 ...
                    matrix[i, j if j < size else period - j] += weight
            self._kernels[key] = matrix.to(device=device, dtype=dtype)
        return self._kernels[key]

    def elastic_field(self, n: int, size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """(n, size, size, 2) displacements in grid units: uniform noise in [-1, 1], smoothed by a
        Gaussian of elastic_sigma pixels, times elastic_alpha pixels (Simard et al. 2003)."""
        noise = torch.rand(n * 2, size, size, generator=generator, device=device) * 2 - 1
        blur = self._smoothing_matrix(size, device, noise.dtype)
        smooth = blur @ noise @ blur.T
        return smooth.view(n, 2, size, size).permute(0, 2, 3, 1) * (self.elastic_alpha * 2 / size)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, size = len(images), images.shape[-1]
        x = images.reshape(n, 1, size, size)
        x = as_unit_float(x)
        matrices, keep = self._affine_and_kept(n, generator, x.device)
        grid = affine_grid(matrices, size)
        if self.elastic_alpha > 0:
            field = self.elastic_field(n, size, generator, x.device)
            if keep is not None:  # no elastic distortion either for the images p leaves as they are
                field[keep] = 0
            grid = grid + field
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False).view(n, size, size)
