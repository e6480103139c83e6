"""The MNIST-C corruptions (Mu and Gilmer 2019, arXiv:1906.02337), vectorised over a batch of images.

Each function follows google-research/mnist-c `corruptions.py` at the severity MNIST-C's dataset uses, on float
images in [0, 1] (the reference's 0..255 divided by 255). All 15 of MNIST-C's list are here, in its order. Where
this differs from the reference, and why:

- Randomness: a `np.random.Generator` seeded from (seed, the corruption's index in MNIST-C's list, chunk number)
  replaces np.random's global state, and the draws are made for a whole chunk at once: same distributions, other
  numbers. Chunks are `CHUNK` images at fixed offsets, so `corrupt(x)[:CHUNK] == corrupt(x[:CHUNK])`.
- Old scikit-image semantics are kept where the installed 0.26 changed them: `AffineTransform(shear=c)` meant the
  matrix [[1, -sin c], [0, cos c]] (now [[1, -tan c], [0, 1]]), so shear builds that matrix itself; and
  `gaussian(x, sigma, multichannel=True)` on a 2-D image took its columns for channels and blurred along axis 0
  only (vertically), so glass_blur does too. canny_edges and impulse_noise use today's skimage functions, whose
  algorithm and defaults are those of 2019.
- motion_blur: the reference calls ImageMagick's MotionBlurImage through Wand. It is rebuilt here as ImageMagick
  builds it: a kernel of 2*ceil(radius)+1 = 21 taps with weights exp(-i^2 / (2 sigma^2)) (normalised) at integer
  offsets (ceil(i cos a - 0.5), ceil(i sin a - 0.5)) from the pixel, one-sided, edge pixels repeated outside the
  image (ImageMagick's default virtual-pixel method). The PNG round trip's 8-bit rounding happens once, at the end.
- brightness: the reference's gray -> HSV -> value + c -> RGB -> gray equals clip(x + c, 0, 1) on gray images, and
  is computed so (the skimage.color round trip took 0.8 s per 1,000 images).
- fog: the 256 x 256 plasma maps are computed in float32 (the reference: float64), halving fog's time; the error,
  ~1e-7 of the map's range, is far below one gray level.
- Output: the reference returns float 0..255; `corrupt` rounds to the nearest uint8, halves up (so brightness's
  +127.5 gives +128 everywhere).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from skimage import feature, transform
from skimage.filters import gaussian
from skimage.util import random_noise

from mnist_pipeline.shapes import IMAGE_SIZE

S = IMAGE_SIZE
CENTRE = (S - 1) / 2  # 13.5: the point the reference's affine corruptions keep fixed
CHUNK = 1000  # images per random stream and per working set
FOG_CHUNK = 32  # plasma maps made at once: 32 x 256 x 256 float32 = 8 MiB an array
_GRID = np.arange(S, dtype=np.float64)  # the reference's np.linspace(0, 27, 28)


@dataclass(frozen=True)
class Corruption:
    name: str
    severity: int | None
    summary: str
    apply: Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _blur(x: np.ndarray, sigma: tuple[float, float]) -> np.ndarray:
    """skimage.filters.gaussian on each image (mode 'nearest', truncate 4), sigma per (row, column) axis."""
    return gaussian(x, sigma=(0, *sigma))


def _warp_groups(x: np.ndarray, keys: np.ndarray, matrix_of: Callable[..., np.ndarray]) -> np.ndarray:
    """skimage.transform.warp(image, inverse_map=matrix_of(*key)) for each image, one call per distinct key:
    the images of a group ride along as channels of one warp."""
    out, keys = np.empty_like(x), keys.reshape(len(x), -1)
    for key in np.unique(keys, axis=0):
        chosen = (keys == key).all(axis=1)
        out[chosen] = transform.warp(x[chosen].transpose(1, 2, 0), matrix_of(*key)).transpose(2, 0, 1)
    return out


def _centred(a: np.ndarray) -> np.ndarray:
    """The reference's affine matrix `a` (acting on (col, row)) plus the translation that keeps (13.5, 13.5) fixed."""
    m = np.eye(3)
    m[:2, :2] = a
    m[:2, 2] = CENTRE * (1 - m[:2, :2].sum(axis=1))
    return m


def _lines(c0, r0, c1, r1) -> np.ndarray:
    """MNIST-C line_from_points for arrays of endpoints: (K,) each -> (K, 28, 28) anti-aliased lines."""
    c0, r0, c1, r1 = (np.asarray(v, np.float64).reshape(-1, 1, 1) for v in (c0, r0, c1, r1))
    cols, rows = _GRID.reshape(1, 1, S), _GRID.reshape(1, S, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        fit = (r1 - r0) / (c1 - c0) * (cols - c0) + r0
        line = np.clip(np.log(1 - np.clip(np.abs(rows - fit), 0, 2.3 - 1e-10) / 2.3) + 1, 0, 1)
    keep = (cols >= np.floor(c0)) & (cols < np.ceil(c1)) & (c1 != c0)
    return np.where(keep, line, 0.0)


def shot_noise(x, rng):
    """MNIST-C shot_noise, severity 5: Poisson(x * c) / c with c = 3."""
    c = 3
    return np.clip(rng.poisson(x * c) / c, 0, 1)


def impulse_noise(x, rng):
    """MNIST-C impulse_noise, severity 4: skimage random_noise mode 's&p', amount 0.17 (salt vs pepper 0.5)."""
    return np.clip(random_noise(x, mode="s&p", amount=0.17, rng=rng), 0, 1)


def glass_blur(x, rng):
    """MNIST-C glass_blur, severity 1: (sigma, max_delta, iterations) = (0.7, 1, 2). Blur vertically (see module
    docstring), truncate to uint8, then in the reference's order (h, w from 27 down to 2) swap each pixel with
    probability 1/2 with its neighbour at (dy, dx) drawn from randint(-1, 1), i.e. {-1, 0}; blur again."""
    sigma, delta, iterations = 0.7, 1, 2
    n = len(x)
    flat = np.floor(_blur(x, (sigma, 0)) * 255).reshape(n, S * S)
    positions = range(S - delta, delta, -1)
    flips = rng.random((iterations, len(positions), len(positions), n)) < 0.5
    shifts = rng.integers(-delta, delta, size=(iterations, len(positions), len(positions), 2, n))
    images = np.arange(n)
    for it in range(iterations):
        for i, h in enumerate(positions):
            for j, w in enumerate(positions):
                flip, (dx, dy) = flips[it, i, j], shifts[it, i, j]
                here, there = h * S + w, (h + dy) * S + (w + dx)
                a, b = flat[:, here].copy(), flat[images, there]
                flat[:, here] = np.where(flip, b, a)
                flat[images, there] = np.where(flip, a, b)
    return np.clip(_blur(flat.reshape(n, S, S) / 255, (sigma, 0)), 0, 1)


def motion_blur(x, rng):
    """MNIST-C motion_blur, severity 1: ImageMagick MotionBlurImage(radius 10, sigma 3, angle ~ U[-45, 45] deg),
    rebuilt as described in the module docstring."""
    radius, sigma = 10, 3
    n, width = len(x), 2 * int(np.ceil(radius)) + 1
    taps = np.arange(width)
    weights = np.exp(-(taps**2) / (2 * sigma**2))
    weights /= weights.sum()
    angle = np.deg2rad(rng.uniform(-45, 45, n))[:, None]
    dx = np.ceil(taps * np.cos(angle) - 0.5).astype(int)  # (n, width): x is the column, y the row
    dy = np.ceil(taps * np.sin(angle) - 0.5).astype(int)
    pad = width
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad)), mode="edge").reshape(n, -1)
    wide = S + 2 * pad
    base = ((_GRID.astype(int)[:, None] + pad) * wide + _GRID.astype(int)[None, :] + pad).ravel()
    out = np.zeros((n, S * S))
    for i in range(width):
        out += weights[i] * np.take_along_axis(padded, base[None, :] + (dy[:, i] * wide + dx[:, i])[:, None], axis=1)
    return np.clip(out.reshape(n, S, S), 0, 1)


def shear(x, rng):
    """MNIST-C shear, severity 2: c = +-0.4 (random sign); 2019's AffineTransform(shear=c), i.e. the inverse map
    [[1, -sin c], [0, cos c]], about the centre."""
    c = 0.4
    return _warp_groups(x, rng.choice([-1, 1], len(x)),
                        lambda s: _centred(np.array([[1, -np.sin(s * c)], [0, np.cos(s * c)]])))


def scale(x, rng):
    """MNIST-C scale, severity 3: inverse map scales by 1/0.7 about the centre, so the digit shrinks to 0.7."""
    c = 1 / 0.7
    return _warp_groups(x, np.zeros(len(x)), lambda _: _centred(np.diag([c, c])))


def rotate(x, rng):
    """MNIST-C rotate, severity 2: rotation by c = +-0.4 rad (random sign) about the centre."""
    c = 0.4
    return _warp_groups(x, rng.choice([-1, 1], len(x)), lambda s: _centred(
        np.array([[np.cos(s * c), -np.sin(s * c)], [np.sin(s * c), np.cos(s * c)]])))


def brightness(x, rng):
    """MNIST-C brightness, severity 5: gray -> HSV, value + c with c = 0.5 (clipped), -> RGB -> gray; on a gray
    image that is clip(x + c, 0, 1) (S = 0, so RGB = V and the gray weights sum to 1), computed so."""
    return np.clip(x + 0.5, 0, 1)


def translate(x, rng):
    """MNIST-C translate, severity 3: inverse map translates by (dx, dy) = (+-3, +-3), signs drawn independently."""
    c = 3
    return _warp_groups(x, c * rng.choice([-1, 1], (len(x), 2)),
                        lambda dx, dy: transform.AffineTransform(translation=[dx, dy]).params)


def stripe(x, rng):
    """MNIST-C stripe (no severity): invert columns 0-6 and 21-27."""
    out = x.copy()
    out[:, :, :7] = 1 - x[:, :, :7]
    out[:, :, 21:] = 1 - x[:, :, 21:]
    return out


def _plasma(n: int, rng: np.random.Generator, mapsize: int = 256, wibbledecay: float = 3) -> np.ndarray:
    """MNIST-C plasma_fractal (a diamond-square heightmap scaled to [0, 1]) for n maps, cropped to [:28, :28].
    The reference's sums level by level on dense grids (`grid` is its maparray[::step, ::step]), in float32; the
    last level is not assembled, only its min, max and crop are taken."""
    def wibbled(total, wibble):  # the mean of four, plus wibble * U(-wibble, wibble)
        total *= 0.25
        total += rng.random(total.shape, dtype=np.float32) * np.float32(2 * wibble**2) - np.float32(wibble**2)
        return total

    grid, wibble = np.zeros((n, 1, 1), np.float32), 100.0
    while True:
        squares = grid + np.roll(grid, -1, axis=1)
        centre = wibbled(squares + np.roll(squares, -1, axis=2), wibble)
        across = wibbled(centre + np.roll(centre, 1, axis=1) + grid + np.roll(grid, -1, axis=2), wibble)
        down = wibbled(centre + np.roll(centre, 1, axis=2) + grid + np.roll(grid, -1, axis=1), wibble)
        parts, k = (grid, centre, across, down), grid.shape[1]
        if 2 * k == mapsize:
            break
        grid = np.empty((n, 2 * k, 2 * k), np.float32)
        grid[:, ::2, ::2], grid[:, 1::2, 1::2], grid[:, ::2, 1::2], grid[:, 1::2, ::2] = parts
        wibble /= wibbledecay
    lo = np.min([p.min(axis=(1, 2)) for p in parts], axis=0).reshape(n, 1, 1).astype(np.float64)
    hi = np.max([p.max(axis=(1, 2)) for p in parts], axis=0).reshape(n, 1, 1).astype(np.float64)
    crop, h = np.empty((n, S, S)), S // 2
    crop[:, ::2, ::2], crop[:, 1::2, 1::2], crop[:, ::2, 1::2], crop[:, 1::2, ::2] = (p[:, :h, :h] for p in parts)
    return (crop - lo) / (hi - lo)


def fog(x, rng):
    """MNIST-C fog, severity 5: (c, wibbledecay) = (3.0, 1.4); x + c * plasma_fractal(256)[:28, :28], rescaled by
    max(x) / (max(x) + c). Plasma maps are made FOG_CHUNK at a time."""
    c, decay = 3.0, 1.4
    haze = np.concatenate([_plasma(len(x[i:i + FOG_CHUNK]), rng, wibbledecay=decay)
                           for i in range(0, len(x), FOG_CHUNK)])
    top = x.max(axis=(1, 2), keepdims=True)
    return np.clip((x + c * haze) * top / (top + c), 0, 1)


def spatter(x, rng):
    """MNIST-C spatter, severity 4: c = (0.65, 0.3, 1, 0.65, 1.5, 1), mud: liquid ~ N(0.65, 0.3), blurred (sigma 1),
    kept above 0.65; its mask blurred (sigma 1.5) and kept from 0.8 paints colour 63/255 over the image."""
    loc, spread, sigma, threshold, mask_sigma = 0.65, 0.3, 1, 0.65, 1.5
    liquid = _blur(rng.normal(loc, spread, x.shape), (sigma, sigma))
    liquid[liquid < threshold] = 0
    mask = _blur((liquid > threshold).astype(np.float32), (mask_sigma, mask_sigma))
    mask[mask < 0.8] = 0
    return np.clip(x * (1 - mask) + 63 / 255 * mask, 0, 1)


def dotted_line(x, rng):
    """MNIST-C dotted_line (no severity): line_from_points(0, r0, 27, r1), r0, r1 from randint(0, 27), with column
    pairs 0-1, 4-5, ..., 24-25 blanked (and column 27, cut by the line's own end), added to the image."""
    r0, r1 = rng.integers(0, 27, size=(2, len(x)))
    line = _lines(np.zeros(len(x)), r0, np.full(len(x), 27), r1)
    line[:, :, np.arange(S) % 4 < 2] = 0
    return np.clip(x + line, 0, 1)


def _zigzag_line(r0: int, r1: int) -> np.ndarray:
    """The reference zigzag's drawing for one (r0, r1): (28, 28)."""
    a = b = 2.0
    c0, c1 = 2, 25
    theta = np.arctan((r1 - r0) / (c1 - c0))
    d = (c1 - c0) / np.cos(theta)
    points = [(0.0, 0.0)] + [((2 * i + 1) * a, (-1) ** i * b) for i in range(int((d - a) // (2 * a)) + 1)]
    max_c = 2 * a * (d // (2 * a))
    if d != max_c:
        points.append((d, points[-1][1] / (2 * (d - max_c))))
    cs, rs = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]) @ np.array(points).T
    cs, rs = cs + c0, rs + r0
    return np.clip(_lines(cs[:-1], rs[:-1], cs[1:], rs[1:]).sum(axis=0), 0, 1)


@functools.cache
def _zigzags() -> np.ndarray:
    """Every zigzag the reference can draw: [r0 in 0..26, r1 - r0 + 5 in 0..9] -> (28, 28)."""
    return np.array([[_zigzag_line(r0, r0 + dr) for dr in range(-5, 5)] for r0 in range(27)])


def zigzag(x, rng):
    """MNIST-C zigzag (no severity): zigzag of 2-px arms from column 2 to 25, r0 from randint(0, 27),
    r1 = r0 + randint(-5, 5); the segments are clipped sums of line_from_points, added to the image."""
    r0 = rng.integers(0, 27, len(x))
    step = rng.integers(-5, 5, len(x))
    return np.clip(x + _zigzags()[r0, step + 5], 0, 1)


def canny_edges(x, rng):
    """MNIST-C canny_edges (no severity): skimage.feature.canny with its defaults (sigma 1, thresholds 0.1 / 0.2)."""
    return np.stack([feature.canny(image) for image in x]).astype(np.float64)


CORRUPTIONS: dict[str, Corruption] = {c.name: c for c in (
    Corruption("shot_noise", 5, "Poisson noise, 3 photons per unit of light (severity 5)", shot_noise),
    Corruption("impulse_noise", 4, "salt-and-pepper noise on 17% of pixels (severity 4)", impulse_noise),
    Corruption("glass_blur", 1, "row blur sigma 0.7 around two passes of 1-px pixel swaps (severity 1)", glass_blur),
    Corruption("motion_blur", 1, "motion blur, radius 10, sigma 3, angle in [-45, 45] degrees (severity 1)",
               motion_blur),
    Corruption("shear", 2, "shear by +-0.4 rad about the centre (severity 2)", shear),
    Corruption("scale", 3, "shrink to 0.7 about the centre (severity 3)", scale),
    Corruption("rotate", 2, "rotate by +-0.4 rad about the centre (severity 2)", rotate),
    Corruption("brightness", 5, "HSV value raised by 0.5 (severity 5)", brightness),
    Corruption("translate", 3, "shift by +-3 px on each axis (severity 3)", translate),
    Corruption("stripe", None, "columns 0-6 and 21-27 inverted", stripe),
    Corruption("fog", 5, "plasma-fractal fog, strength 3, wibble decay 1.4 (severity 5)", fog),
    Corruption("spatter", 4, "mud spatter from blurred, thresholded noise (severity 4)", spatter),
    Corruption("dotted_line", None, "a dotted anti-aliased line across the image", dotted_line),
    Corruption("zigzag", None, "a zigzag line across the image", zigzag),
    Corruption("canny_edges", None, "Canny edge map (sigma 1)", canny_edges),
)}
_INDEX = {name: i + 1 for i, name in enumerate(CORRUPTIONS)}  # MNIST-C's list starts with identity at 0


def corrupt(images: np.ndarray, name: str, seed: int) -> np.ndarray:
    """(N, 28, 28) uint8 -> (N, 28, 28) uint8, the same images corrupted; deterministic in (images, name, seed).
    Also takes (N, 28, 28, 1) and gives that shape back. Chunk k (images k*CHUNK onwards) draws from
    np.random.default_rng([seed, index of the corruption, k])."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[1:] not in ((S, S), (S, S, 1)):
        raise ValueError(f"expected uint8 images of shape (N, {S}, {S}) or (N, {S}, {S}, 1), "
                         f"got {images.dtype} {images.shape}")
    flat = images.reshape(len(images), S, S)
    out = np.empty_like(flat)
    apply = CORRUPTIONS[name].apply
    for k, start in enumerate(range(0, len(flat), CHUNK)):
        y = apply(flat[start:start + CHUNK] / 255.0, np.random.default_rng([seed, _INDEX[name], k]))
        out[start:start + CHUNK] = np.floor(np.clip(y, 0, 1) * 255 + 0.5 + 1e-7).astype(np.uint8)
    return out.reshape(images.shape)
