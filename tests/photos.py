"""Realistic photos of held-out 28x28 items, for `mnist predict`'s tests and its measured photo-to-array ratio.

Digits written in pen, pencil or chalk and photographed with a phone: paper under uneven light (a gradient and a
soft shadow), sometimes with the table showing around the sheet, a slight tilt, focus blur, sensor noise, JPEG.
Fashion items as product photos: the item in a colour on a white studio background, a little vignetting, JPEG.
Each photo is drawn from the 28x28 item itself, so the model's answer on the photo can be compared with its
answer on the raw array of the same item.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

MEDIA = ("pen", "pencil", "chalk")


def digit_photo(digit: np.ndarray, rng: np.random.Generator, medium: str | None = None,
                size: tuple[int, int] | None = None, table: bool | None = None) -> bytes:
    """JPEG bytes of an MNIST digit (28x28 uint8, light on dark) handwritten in `medium` and photographed."""
    medium = medium or str(rng.choice(MEDIA))
    width, height = size or (int(rng.integers(640, 1400)), int(rng.integers(480, 1100)))
    box = int(min(width, height) * rng.uniform(0.3, 0.65))  # the digit's 28x28 field, in photo pixels
    stroke = _strokes(digit, box, rng, medium)
    paper, ink = _surface(medium, rng)
    canvas = np.ones((height, width, 1), np.float32) * paper
    top, left = int(rng.integers(0, height - box + 1)), int(rng.integers(0, width - box + 1))
    field = canvas[top: top + box, left: left + box]
    canvas[top: top + box, left: left + box] = field + (ink - field) * stroke[..., None]
    if medium == "pencil":  # graphite is grainy: the paper's tooth shows through the stroke
        grain = rng.uniform(0.75, 1.0, size=(height, width, 1)).astype(np.float32)
        canvas = paper + (canvas - paper) * grain
    if table if table is not None else rng.random() < 0.4:
        canvas = _on_a_table(canvas, rng)
    canvas = canvas * _lighting(height, width, rng)[..., None]
    return _camera(canvas, rng, blur=rng.uniform(0.4, 1.2) * box / 200)


def product_photo(item: np.ndarray, rng: np.random.Generator, size: int | None = None) -> bytes:
    """JPEG bytes of a Fashion-MNIST item (28x28 uint8, light on dark, as stored) as a studio product photo: the
    negated item (dark on white, as Zalando's photos were before the dataset negated them) in a colour of the
    same brightness, on white."""
    side = size or int(rng.integers(300, 900))
    long_edge = int(side * rng.uniform(0.6, 0.9))
    darkness = np.asarray(Image.fromarray(item).resize((long_edge, long_edge), Image.Resampling.BICUBIC),
                          np.float32).clip(0, 255) / 255.0
    hue = rng.uniform(0.5, 1.0, size=3).astype(np.float32)
    hue /= hue @ np.array([0.299, 0.587, 0.114], np.float32)  # a colour as bright as grey: the item's shading stays
    white = np.float32(rng.uniform(238, 255))
    canvas = np.full((side, side, 3), white, np.float32)
    top, left = int(rng.integers(0, side - long_edge + 1)), int(rng.integers(0, side - long_edge + 1))
    canvas[top: top + long_edge, left: left + long_edge] = white * (1 - darkness[..., None]) * (
        1 + np.minimum(3 * darkness[..., None], 1) * (hue - 1))  # the white around the item stays white
    yy, xx = np.mgrid[0:side, 0:side] / side - 0.5
    vignette = 1 - rng.uniform(0.0, 0.12) * (yy ** 2 + xx ** 2) * 2
    return _camera(canvas * vignette[..., None], rng, blur=rng.uniform(0.3, 0.8))


def _strokes(digit: np.ndarray, box: int, rng: np.random.Generator, medium: str) -> np.ndarray:
    """(box, box) float32 in [0, 1]: how much ink covers each pixel, smooth-edged, tilted a little. Pen lines
    are thinner than MNIST's strokes (a ballpoint on a digit a few cm tall), chalk lines thicker and broken."""
    smooth = np.asarray(Image.fromarray(digit).resize((box, box), Image.Resampling.BICUBIC), np.float32) / 255.0
    smooth = ndimage.rotate(smooth, rng.uniform(-8, 8), reshape=False, order=1)
    level = {"pen": rng.uniform(0.55, 0.8), "pencil": rng.uniform(0.45, 0.65), "chalk": rng.uniform(0.2, 0.4)}
    edge = 40.0 / box  # the upscaled digit climbs about this much over two photo pixels: a soft 2-pixel edge
    cover = np.clip((smooth - level[medium]) / edge + 0.5, 0, 1)
    if medium == "chalk":  # chalk skips over the board's texture: gaps along the stroke
        gaps = ndimage.gaussian_filter(rng.random(cover.shape).astype(np.float32), box / 150)
        cover = cover * np.clip((gaps - gaps.mean()) / (gaps.std() + 1e-6) * 0.6 + 0.9, 0.2, 1)
    return cover.astype(np.float32)


def _surface(medium: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(paper or board colour, ink colour), RGB 0-255."""
    if medium == "chalk":  # a green or black board, white or pale yellow chalk
        board = rng.choice([np.array([40, 70, 55]), np.array([38, 40, 42])]) * rng.uniform(0.8, 1.3)
        return board.astype(np.float32), rng.uniform(200, 245, size=3).astype(np.float32)
    paper = np.float32(rng.uniform(205, 250)) - np.array([0, rng.uniform(0, 8), rng.uniform(0, 20)], np.float32)
    if medium == "pen":  # blue or black ballpoint
        ink = rng.choice([np.array([30, 40, 120]), np.array([25, 25, 30])]) * rng.uniform(0.8, 1.5)
    else:  # graphite: grey, lighter than ink
        ink = np.full(3, rng.uniform(80, 140))
    return paper, ink.astype(np.float32)


def _on_a_table(canvas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The sheet, tilted, on a wooden or dark table that shows along one or two sides of the photo."""
    height, width = canvas.shape[:2]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = np.deg2rad(rng.uniform(-6, 6))
    inside = np.ones((height, width), bool)
    for side in rng.choice(4, size=int(rng.integers(1, 3)), replace=False):
        margin = rng.uniform(0.04, 0.12) * (width if side in (0, 2) else height)
        across = (xx if side in (0, 2) else yy) * np.cos(angle) + (yy if side in (0, 2) else xx) * np.sin(angle)
        limit = width if side == 0 else height if side == 1 else 0
        inside &= (across < limit - margin) if side in (0, 1) else (across > margin)
    wood = np.array(rng.choice([[120, 80, 50], [60, 45, 35], [150, 150, 145]]), np.float32)
    grain = 1 + 0.12 * np.sin(yy / rng.uniform(3, 9) + 2 * np.sin(xx / 40))[..., None]
    return np.where(inside[..., None], canvas, wood * grain)


def _lighting(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A multiplicative light field: brighter towards a lamp on one side, and a soft shadow (a hand, the phone)
    across part of the photo."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    direction = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(direction) * xx / width + np.sin(direction) * yy / height)
    light = 1.0 - rng.uniform(0.15, 0.45) * (ramp - ramp.min()) / (np.ptp(ramp) + 1e-6)
    if rng.random() < 0.7:
        angle = rng.uniform(0, 2 * np.pi)
        offset = rng.uniform(0.3, 0.7) * (width * abs(np.cos(angle)) + height * abs(np.sin(angle)))
        distance = np.cos(angle) * xx + np.sin(angle) * yy - offset
        softness = rng.uniform(0.02, 0.1) * max(height, width)
        light = light * (1 - rng.uniform(0.2, 0.45) / (1 + np.exp(-distance / softness)))
    return light


def _camera(canvas: np.ndarray, rng: np.random.Generator, blur: float) -> bytes:
    """Focus blur, sensor noise and JPEG compression, as a phone saves a photo."""
    canvas = ndimage.gaussian_filter(canvas, sigma=(blur, blur, 0))
    canvas = canvas + rng.normal(0, rng.uniform(1.5, 5), size=canvas.shape)
    buffer = io.BytesIO()
    Image.fromarray(canvas.clip(0, 255).astype(np.uint8)).save(buffer, format="JPEG",
                                                              quality=int(rng.integers(60, 92)))
    return buffer.getvalue()
