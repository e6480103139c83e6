"""From a grey picture of one item (a photo, a scan, a drawing) to the 28x28 uint8 image a run's model expects,
following the recipe its dataset was made with (NumPy, SciPy and Pillow; no TensorFlow).

Two steps. First the picture is read as a surface and what is on it (`surface_and_ink`): the surface's light is
estimated over the whole picture, not from one border value, so a shadow or a lamp's gradient does not survive
as a grey wedge; the ink's polarity (dark on paper, light on a board) is decided against that estimate; anything
that runs along the picture's edge (a table, the sheet's edge) is dropped. Then the dataset's recipe:
- MNIST (LeCun et al.): the digit scaled to fit a 20x20 box keeping its aspect ratio, anti-aliased, then placed
  in the 28x28 field so that its centre of mass is at the centre.
- Fashion-MNIST (its README, "Get the data"): trim the edges close to the corner colour, resize the longest edge
  to 28, centre on the canvas, negate (items light on black, their shading kept).
"""

from __future__ import annotations

import numpy as np

from mnist_pipeline.shapes import IMAGE_SIZE

BOX = 20  # MNIST digits fit a 20x20 box inside the 28x28 image
WORK_SIDE = 512  # pictures are analysed at most this large: enough for a 20x20 digit, bounded time
SMALL_SIDE = 64  # below this a picture is a drawing or a dataset image: its border is its background
GRID = 16  # the light is estimated on this many cells along the longer side...
LIGHT_CELLS = 5  # ...as a median over 5x5 cells: ink covers a minority of any such window
# The table or the sheet's edge: a shape touching one side of the picture along EDGE_CONTACT of it, or one lying
# within EDGE_MARGIN of the sides and stretching along EDGE_SPAN of one side.
EDGE_CONTACT = 0.2
EDGE_MARGIN = 0.2
EDGE_SPAN = 0.4
# A notebook's ruled line: across RULE_SPAN of the picture or more (a digit, even a "1", leaves more margin than
# that), and no thicker than RULE_WIDTH of it.
RULE_SPAN = 0.9
RULE_WIDTH = 0.03
MIN_PART = 0.1  # a shape with less than this share of the largest shape's ink is a speck, not part of the item
STANDS_OUT = 8  # ink stands out from the paper's noise by this many of its standard deviations...
MIN_INK = 0.06  # ...and by this share of the surface's light at least; below both, the page is blank
STROKE_LIMIT = 0.2  # wider than this share of the picture's shorter side is not a stroke (a frame-filling
#                    digit's are about 12%)
# MNIST's stroke width over digit height (`stroke_ratio` on its training digits, upscaled 8x): a digit thinner
# than its 5th percentile is thickened to its median.
THIN_STROKE = 0.084
TYPICAL_STROKE = 0.125


def prepare(gray: np.ndarray, dataset: str) -> np.ndarray:
    """A grey picture (H, W) 0-255 of one item -> (28, 28) uint8 as `dataset`'s images are made."""
    if dataset == "fashion_mnist":
        return fashion_style(gray)
    return mnist_style(gray)


def mnist_style(gray: np.ndarray) -> np.ndarray:
    """Any-size grey picture (0-255) of a digit -> (28, 28) uint8, light digit on black, size-normalized to
    MNIST's 20x20 box and mass-centred. Strokes much thinner than MNIST's (a ballpoint photographed) are
    thickened to MNIST's median width first: shrunk into the box they would be faint hairlines."""
    ink = surface_and_ink(gray, large_item=False)
    ratio = stroke_ratio(ink)
    if 0 < ratio < THIN_STROKE:
        ink = _thicken(ink, (TYPICAL_STROKE - ratio) * _extent(ink))
    canvas = _centred_in_image(ink, threshold=0.1, side=BOX)  # faint remains of noise do not widen the box
    return _centre_of_mass_to_middle(canvas).round().astype(np.uint8)


def fashion_style(gray: np.ndarray) -> np.ndarray:
    """Any-size grey picture (0-255) of one clothing item -> (28, 28) uint8 as Fashion-MNIST makes its images:
    the item light on black with its own shading, trimmed, its longest edge 28 pixels, centred."""
    ink = surface_and_ink(gray, large_item=True)
    canvas = _centred_in_image(ink, threshold=0.05, side=IMAGE_SIZE)  # the README's trim: 5% of the intensity range
    return canvas.clip(0, 255).round().astype(np.uint8)


def _centred_in_image(ink: np.ndarray, threshold: float, side: int) -> np.ndarray:
    """The ink over `threshold`, cropped to its bounding box, scaled (aspect kept, anti-aliased) so its longer
    edge is `side` pixels, and placed in the middle of a 28x28 field: (28, 28) float32 0-255, zeros if no ink."""
    from PIL import Image

    canvas = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    rows, cols = np.nonzero(ink > threshold)
    if rows.size == 0:
        return canvas
    item = ink[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1] * 255.0
    scale = side / max(item.shape)
    size = (max(1, round(item.shape[1] * scale)), max(1, round(item.shape[0] * scale)))  # (width, height)
    small = np.clip(np.asarray(Image.fromarray(item.astype(np.float32)).resize(size, Image.Resampling.LANCZOS)),
                    0, 255)
    top, left = (IMAGE_SIZE - small.shape[0]) // 2, (IMAGE_SIZE - small.shape[1]) // 2
    canvas[top: top + small.shape[0], left: left + small.shape[1]] = small
    return canvas


def surface_and_ink(gray: np.ndarray, large_item: bool) -> np.ndarray:
    """How much ink covers each pixel, (H', W') in [0, 1], 0 where there is only the surface it is on, whatever
    the light; at the picture's working size (WORK_SIDE at most).

    Strokes (`large_item` False: a digit): the surface's light is estimated everywhere from the picture itself,
    shapes running along the picture's edge are dropped, and the ink is stretched so the strokes' cores reach 1
    (MNIST's digits all do). A large item (a garment filling most of its photo): the light is fitted to the
    picture's border and extended inwards, and the ink keeps its contrast (a pale item stays pale: Fashion's
    shading)."""
    gray = _working_size(np.asarray(gray, np.float32))
    drawn = _drawn(gray)
    if min(gray.shape) < SMALL_SIDE or (drawn and not large_item):
        surface = np.full_like(gray, corner_level(gray))
    else:
        surface = _border_light(gray) if large_item else _surface_light(gray)
    dark = ink_is_dark(gray - surface)
    if not large_item and not drawn and min(gray.shape) >= SMALL_SIDE:
        surface = _surface_around_strokes(gray, surface, dark)
    # The share of the surface's light that the ink takes away (dark ink) or adds (light ink): a shadow or a
    # dimmer lamp scales ink and surface alike, so the share stays what it is in full light.
    share = (surface - gray if dark else gray - surface) / np.maximum(surface, 16.0)
    amount = np.clip(share, 0, None)
    if large_item:  # what differs from the background by less than the README's 5% trim is background
        return np.where(amount < 0.05, 0, np.clip(amount, 0, 1))
    noise = 1.4826 * float(np.median(np.abs(share - np.median(share))))  # most of a digit's picture is paper
    if amount.max() < max(STANDS_OUT * noise, MIN_INK):  # grain, banding, a gradient's remains: a blank page
        return np.zeros_like(amount)
    # Sensor noise and the paper's grain: within 3 sigma of the paper's own level is paper.
    amount = np.clip(share - float(np.median(share)) - 3 * noise, 0, None)
    if not drawn and min(amount.shape) >= SMALL_SIDE:
        amount = _without_edge_shapes(amount)
    if amount.max() < MIN_INK:
        return np.zeros_like(amount)
    core = np.percentile(amount[amount > 0.5 * amount.max()], 75)  # the strokes' cores
    return np.clip(amount / core, 0, 1)


def _drawn(gray: np.ndarray) -> bool:
    """Whether the picture was drawn (a canvas, a paint program) or scanned flat rather than photographed: its
    four corners are within 3 grey levels of each other and half its pixels or more within 2 of them. Such a
    picture has no uneven light or table to remove, and its strokes may fill the frame and touch its edges."""
    corners = [np.median(patch) for patch in _corners(gray)]
    if max(corners) - min(corners) > 3:
        return False
    return float(np.mean(np.abs(gray - np.median(corners)) <= 2)) >= 0.5


def _surface_around_strokes(gray: np.ndarray, rough: np.ndarray, dark: bool) -> np.ndarray:
    """The surface's brightness, refined where the `rough` estimate (smooth, from cell medians) cannot follow
    the light: a morphological closing (dark ink) or opening (light ink) over a square STROKE_LIMIT of the
    shorter side keeps everything wider than a stroke as it is (a shadow's soft edge and its corners), and the
    strokes, narrower, vanish from it. Of the two estimates the one on the ink's side is taken: the closing
    where a shadow is deeper than the smooth estimate, the smooth estimate where the closing would paint a
    narrow table strip over as paper (the strip then shows as ink along the picture's edge, and is dropped)."""
    from scipy import ndimage

    size = max(3, round(STROKE_LIMIT * min(gray.shape)) | 1)
    if dark:
        return np.minimum(rough, ndimage.grey_closing(gray, size=(size, size)))
    return np.maximum(rough, ndimage.grey_opening(gray, size=(size, size)))


def ink_is_dark(difference: np.ndarray) -> bool:
    """Whether the ink is darker than its surface, from the picture minus its surface's light: decided by the
    pixels that stand out most, not by how light the surface is (light ink on mid-grey paper is light ink).
    The middle of the picture decides when anything stands out there: along the sides, a table's edge stands
    out more than any stroke."""
    inner = difference[~_margin(difference.shape)] if min(difference.shape) >= SMALL_SIDE else difference
    noise = 1.4826 * float(np.median(np.abs(difference - np.median(difference))))
    if inner.size == 0 or np.abs(inner).max() <= 8 * noise:
        inner = difference.ravel()
    strong = np.abs(inner) >= 0.5 * np.abs(inner).max()
    return float(inner[strong].sum()) < 0


def stroke_ratio(digit: np.ndarray) -> float:
    """Stroke width over the digit's height (0 when there is no stroke): twice the ink's area over its
    perimeter, on the ink thresholded at half its range. Meaningful on strokes several pixels wide (a photo
    at working size; MNIST's digits upscaled), where the count of edge pixels is the perimeter."""
    from scipy import ndimage

    mask = digit > 0.5 * digit.max() if digit.max() > 0 else digit > 0
    mask = ndimage.binary_closing(mask, iterations=2)  # chalk's and pencil's grain is not the stroke's edge
    if not mask.any():
        return 0.0
    perimeter = int((mask & ~ndimage.binary_erosion(mask)).sum())
    rows, cols = np.nonzero(mask)
    return 2 * mask.sum() / perimeter / (max(np.ptp(rows), np.ptp(cols)) + 1)


def _working_size(gray: np.ndarray) -> np.ndarray:
    from PIL import Image

    scale = WORK_SIDE / max(gray.shape)
    if scale >= 1:
        return gray
    size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
    return np.asarray(Image.fromarray(gray).resize(size, Image.Resampling.BOX), np.float32)


def _surface_light(gray: np.ndarray) -> np.ndarray:
    """The surface's brightness at each pixel, as if the ink were not there: medians over cells, then the
    median of each 5x5 neighbourhood of cells (strokes cover a minority of it, whatever their polarity),
    smoothed and brought back to full size. Follows a lamp's gradient and a soft shadow."""
    from PIL import Image
    from scipy import ndimage

    cell = max(gray.shape) / GRID
    rows, cols = max(2, round(gray.shape[0] / cell)), max(2, round(gray.shape[1] / cell))
    row_edges = np.linspace(0, gray.shape[0], rows + 1).astype(int)
    col_edges = np.linspace(0, gray.shape[1], cols + 1).astype(int)
    cells = np.array([[np.median(gray[r0:r1, c0:c1]) for c0, c1 in zip(col_edges[:-1], col_edges[1:], strict=True)]
                      for r0, r1 in zip(row_edges[:-1], row_edges[1:], strict=True)], np.float32)
    cells = ndimage.median_filter(cells, size=LIGHT_CELLS, mode="nearest")
    cells = ndimage.gaussian_filter(cells, sigma=1.0, mode="nearest")
    return np.asarray(Image.fromarray(cells).resize(gray.shape[::-1], Image.Resampling.BILINEAR), np.float32)


def _border_light(gray: np.ndarray) -> np.ndarray:
    """The background's brightness at each pixel, fitted to a ring along the picture's border as a quadratic
    surface (a studio light's fall-off, vignetting), with pixels far from the fit (the item touching the
    border) left out of a second fit."""
    ring = max(2, round(0.03 * min(gray.shape)))
    rows, cols = np.indices(gray.shape)
    on_ring = (np.minimum(rows, gray.shape[0] - 1 - rows) < ring) | (np.minimum(cols, gray.shape[1] - 1 - cols) < ring)
    y, x = rows / gray.shape[0] - 0.5, cols / gray.shape[1] - 0.5
    terms = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=-1)
    use = on_ring
    for _ in range(2):
        coefficients, *_ = np.linalg.lstsq(terms[use], gray[use], rcond=None)
        fitted = terms @ coefficients
        residual = gray - fitted
        spread = 1.4826 * np.median(np.abs(residual[on_ring])) + 1.0
        use = on_ring & (np.abs(residual) < 3 * spread)
    return fitted.astype(np.float32)


def corner_level(gray: np.ndarray) -> float:
    """The background's level in a small or dataset-made picture: the median of its four corners (a tenth of
    each side), which a centred item rarely reaches even when it spans the picture (a pullover, a "1")."""
    return float(np.median(np.concatenate(_corners(gray), axis=None)))


def _corners(gray: np.ndarray) -> list[np.ndarray]:
    """The picture's four corner patches, a tenth of its shorter side square."""
    size = max(1, min(gray.shape) // 10)
    return [gray[rows, cols] for rows in (slice(0, size), slice(-size, None))
            for cols in (slice(0, size), slice(-size, None))]


def _without_edge_shapes(amount: np.ndarray) -> np.ndarray:
    """The ink without what runs along the picture's edge (the table beside the sheet, the sheet's edge, a
    shadow's edge), without a notebook's ruled lines that do not cross the digit, and without specks. An edge
    shape touches one side of the picture along a fifth of it or more, or lies almost all within a margin along
    the sides and stretches along one of them; a digit near the edge is shorter than that. Specks are judged
    after pieces of one stroke (chalk skipping, a pencil's gaps) are grouped."""
    from scipy import ndimage

    # A textured table's grain or a dashed band is one shape: pieces a few pixels apart are joined first.
    close = max(1, round(max(amount.shape) / 120))
    shapes, count = ndimage.label(ndimage.binary_dilation(amount > 0.1 * amount.max(), iterations=close),
                                  structure=np.ones((3, 3)))
    labels = np.arange(1, count + 1)
    mass = ndimage.sum(amount, shapes, labels)
    in_margin = ndimage.sum(amount * _margin(amount.shape), shapes, labels) / np.maximum(mass, 1e-12)
    touching = np.zeros(count + 1)
    for side in (shapes[0], shapes[-1], shapes[:, 0], shapes[:, -1]):
        touching = np.maximum(touching, np.bincount(side, minlength=count + 1) / side.size)
    extent = np.array([((rows.stop - rows.start) / amount.shape[0], (cols.stop - cols.start) / amount.shape[1])
                       for rows, cols in ndimage.find_objects(shapes)])  # (height, width) as shares of the picture
    along = extent.max(axis=1)
    ruled = ((extent[:, 1] >= RULE_SPAN) & (extent[:, 0] <= RULE_WIDTH)) | \
            ((extent[:, 0] >= RULE_SPAN) & (extent[:, 1] <= RULE_WIDTH))  # a notebook's lines, its margin
    edge = (touching[1:] >= EDGE_CONTACT) | ((in_margin > 0.8) & (along >= EDGE_SPAN)) | ruled
    if edge.all():  # nothing but edge shapes: keep them rather than return nothing
        return amount
    amount = np.where(np.isin(shapes, labels[edge]), 0, amount)
    reach = max(1, round(max(amount.shape) / 60))  # pieces this close are one stroke's
    mask = amount > 0.25 * amount.max()
    groups, count = ndimage.label(ndimage.binary_dilation(mask, iterations=reach), structure=np.ones((3, 3)))
    mass = ndimage.sum(amount, groups, np.arange(1, count + 1))
    keep = np.arange(1, count + 1)[mass >= MIN_PART * mass.max()]
    return np.where(np.isin(groups, keep), amount, 0)


def _margin(shape: tuple[int, int]) -> np.ndarray:
    """True within EDGE_MARGIN of any side of a picture of `shape`."""
    rows, cols = np.indices(shape)
    return (np.minimum(rows, shape[0] - 1 - rows) < EDGE_MARGIN * shape[0]) | \
           (np.minimum(cols, shape[1] - 1 - cols) < EDGE_MARGIN * shape[1])


def _extent(ink: np.ndarray) -> float:
    rows, cols = np.nonzero(ink > 0.5)
    return float(max(np.ptp(rows), np.ptp(cols)) + 1) if rows.size else 0.0


def _thicken(ink: np.ndarray, width: float) -> np.ndarray:
    """Grow the strokes by about `width` pixels in all (a grey dilation with a disk)."""
    from scipy import ndimage

    radius = max(1, round(width / 2))
    yy, xx = np.mgrid[-radius: radius + 1, -radius: radius + 1]
    return ndimage.grey_dilation(ink, footprint=xx ** 2 + yy ** 2 <= radius ** 2)


def _centre_of_mass_to_middle(image: np.ndarray) -> np.ndarray:
    total = image.sum()
    if total <= 0:  # no ink: nothing to move
        return image
    rows, cols = np.indices(image.shape)
    middle = (IMAGE_SIZE - 1) / 2  # 13.5: between the two central pixels
    shift_r = int(round(middle - (rows * image).sum() / total))
    shift_c = int(round(middle - (cols * image).sum() / total))
    shifted = np.zeros_like(image)
    size = IMAGE_SIZE
    src_r = slice(max(0, -shift_r), min(size, size - shift_r))
    src_c = slice(max(0, -shift_c), min(size, size - shift_c))
    dst_r = slice(max(0, shift_r), min(size, size + shift_r))
    dst_c = slice(max(0, shift_c), min(size, size + shift_c))
    shifted[dst_r, dst_c] = image[src_r, src_c]
    return shifted
