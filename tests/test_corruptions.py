import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage
from skimage import color

from mnist_pipeline import corruptions
from mnist_pipeline.corruptions import CORRUPTIONS, corrupt

S = 28
MNIST_C = ["shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear", "scale", "rotate", "brightness",
           "translate", "stripe", "fog", "spatter", "dotted_line", "zigzag", "canny_edges"]
FIXED = {"scale", "brightness", "stripe", "canny_edges"}  # no random choice in their definition
ROWS, COLS = np.mgrid[:S, :S]


def strokes(n=16, seed=0):
    """n digit-like uint8 images: a ring and a bar through the middle, each at its own place and angle."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, S, S), bool)
    for i in range(n):
        r0, c0 = rng.uniform(11, 17, 2)
        ring = np.abs(np.hypot(ROWS - r0, COLS - c0) - rng.uniform(4, 7)) < 1.2
        a = rng.uniform(0, np.pi)
        across = np.abs((ROWS - 13.5) * np.cos(a) - (COLS - 13.5) * np.sin(a))
        out[i] = ring | ((across < 1.3) & (np.hypot(ROWS - 13.5, COLS - 13.5) < 9))
    return out.astype(np.uint8) * 255


def block(n, rows, cols, value=255):
    x = np.zeros((n, S, S), np.uint8)
    x[:, rows, cols] = value
    return x


def centre_of_mass(images):
    w = images.astype(float)
    total = w.sum(axis=(1, 2))
    return (w * ROWS).sum(axis=(1, 2)) / total, (w * COLS).sum(axis=(1, 2)) / total


def principal_angle(image):
    """The angle (rad) of the ink's principal axis from the column axis, rows counted downwards."""
    w = image.astype(float) / image.sum()
    r, c = (w * ROWS).sum(), (w * COLS).sum()
    rr, cc, rc = (w * (ROWS - r) ** 2).sum(), (w * (COLS - c) ** 2).sum(), (w * (ROWS - r) * (COLS - c)).sum()
    return 0.5 * np.arctan2(2 * rc, cc - rr)


def test_the_catalogue_is_mnist_c_in_its_order_with_its_default_severities():
    assert list(CORRUPTIONS) == MNIST_C
    severities = {name: c.severity for name, c in CORRUPTIONS.items()}
    assert severities == {"shot_noise": 5, "impulse_noise": 4, "glass_blur": 1, "motion_blur": 1, "shear": 2,
                          "scale": 3, "rotate": 2, "brightness": 5, "translate": 3, "stripe": None, "fog": 5,
                          "spatter": 4, "dotted_line": None, "zigzag": None, "canny_edges": None}
    for name, c in CORRUPTIONS.items():
        assert c.name == name and c.summary and "\n" not in c.summary


@pytest.mark.parametrize("name", MNIST_C)
def test_each_is_deterministic_keeps_shape_and_dtype_and_changes_the_images(name):
    x = strokes()
    out = corrupt(x, name, seed=1)
    assert out.shape == x.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(corrupt(x, name, seed=1), out)
    np.testing.assert_array_equal(corrupt(x[..., None], name, seed=1), out[..., None])  # (N, 28, 28, 1) too
    changed = (out != x).any(axis=(1, 2))
    assert changed.mean() >= (0.5 if name == "spatter" else 1.0)  # mud does not land on every image
    other = corrupt(x, name, seed=2)
    assert np.array_equal(other, out) == (name in FIXED)


def test_an_unknown_name_or_bad_images_are_refused():
    with pytest.raises(ValueError, match="shot_noise.*canny_edges"):
        corrupt(strokes(2), "frost", 0)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(strokes(2).astype(np.float32), "stripe", 0)
    with pytest.raises(ValueError, match="shape"):
        corrupt(np.zeros((2, 32, 32), np.uint8), "stripe", 0)
    assert corrupt(np.zeros((0, S, S), np.uint8), "fog", 0).shape == (0, S, S)


def test_the_module_imports_neither_tensorflow_nor_keras():
    code = ("import sys, mnist_pipeline.corruptions; "
            "sys.exit(any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_chunks_have_their_own_streams_and_the_first_chunk_matches_a_chunk_sized_call(monkeypatch):
    x = strokes(10)
    monkeypatch.setattr(corruptions, "CHUNK", 4)
    monkeypatch.setattr(corruptions, "FOG_CHUNK", 3)
    for name in MNIST_C:
        np.testing.assert_array_equal(corrupt(x, name, 5)[:4], corrupt(x[:4], name, 5), err_msg=name)
    same = np.repeat(strokes(1), 8, axis=0)
    noisy = corrupt(same, "shot_noise", 5)
    assert not np.array_equal(noisy[:4], noisy[4:])


def test_a_large_batch_is_cut_into_chunks_of_a_thousand():
    x = np.repeat(strokes(5), 500, axis=0)  # 2,500 images
    for name in ("shot_noise", "translate"):
        out = corrupt(x, name, 3)
        np.testing.assert_array_equal(out[:1000], corrupt(x[:1000], name, 3))
        assert not np.array_equal(out[1000:2000], out[:1000])


def test_stripe_inverts_exactly_columns_0_to_6_and_21_to_27():
    x = strokes(4)
    out = corrupt(x, "stripe", 0)
    inverted = np.isin(np.arange(S), [*range(7), *range(21, 28)])
    np.testing.assert_array_equal(out[:, :, inverted], 255 - x[:, :, inverted])
    np.testing.assert_array_equal(out[:, :, ~inverted], x[:, :, ~inverted])


def test_translate_moves_the_ink_by_3_px_on_both_axes_with_random_signs():
    x = block(32, slice(10, 18), slice(11, 16))
    out = corrupt(x, "translate", 0)
    (r0, c0), (r1, c1) = centre_of_mass(x), centre_of_mass(out)
    for shift in (r1 - r0, c1 - c0):
        np.testing.assert_allclose(np.abs(shift), 3, atol=1e-9)
        assert (shift > 0).any() and (shift < 0).any()
    np.testing.assert_array_equal(out.sum(axis=(1, 2)), x.sum(axis=(1, 2)))


def test_rotate_turns_a_bar_by_0_4_rad_either_way_about_the_centre():
    x = block(32, slice(13, 15), slice(4, 24))
    out = corrupt(x, "rotate", 0)
    angles = np.array([principal_angle(image) for image in out])
    np.testing.assert_allclose(np.abs(angles), 0.4, atol=0.02)
    assert (angles > 0).any() and (angles < 0).any()
    r, c = centre_of_mass(out)
    np.testing.assert_allclose(r, 13.5, atol=0.1)
    np.testing.assert_allclose(c, 13.5, atol=0.1)


def test_scale_shrinks_the_ink_about_the_centre_to_0_7():
    x = strokes(8)
    out = corrupt(x, "scale", 0)

    def spread(images):
        w = images.astype(float)
        return np.sqrt((w * ((ROWS - 13.5) ** 2 + (COLS - 13.5) ** 2)).sum(axis=(1, 2)) / w.sum(axis=(1, 2)))

    np.testing.assert_allclose(spread(out) / spread(x), 0.7, atol=0.03)


def test_shear_slants_a_vertical_bar_by_sin_0_4_as_the_2019_affine_transform_did():
    x = block(32, slice(4, 24), slice(13, 15))
    out = corrupt(x, "shear", 0)
    slopes = []
    for image in out.astype(float):  # the ink's column against its row, weighted by ink
        w = image.sum(axis=1)
        centre = (image * COLS).sum(axis=1)[w > 0] / w[w > 0]
        slopes.append(np.polyfit(np.arange(S)[w > 0], centre, 1, w=np.sqrt(w[w > 0]))[0])
    np.testing.assert_allclose(np.abs(slopes), np.sin(0.4), atol=0.01)  # tan(0.4) = 0.42 would be today's skimage
    assert min(slopes) < 0 < max(slopes)


def test_brightness_adds_half_the_range_as_the_hsv_round_trip_does():
    x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16).repeat(2, axis=1).repeat(2, axis=2)[:, :S, :S].copy()
    out = corrupt(x, "brightness", 0)
    np.testing.assert_array_equal(out, np.minimum(x.astype(int) + 128, 255))  # +127.5, halves rounded up
    hsv = color.rgb2hsv(color.gray2rgb(x / 255))
    hsv[..., 2] = np.clip(hsv[..., 2] + 0.5, 0, 1)
    reference = np.clip(color.rgb2gray(color.hsv2rgb(hsv)), 0, 1)
    np.testing.assert_array_equal(out, np.floor(reference * 255 + 0.5 + 1e-7).astype(np.uint8))


def test_impulse_noise_sets_about_17_percent_of_pixels_to_0_or_255():
    x = np.full((16, S, S), 128, np.uint8)
    out = corrupt(x, "impulse_noise", 0)
    hit = out != 128
    assert abs(hit.mean() - 0.17) < 0.015
    assert set(np.unique(out[hit])) == {0, 255}
    assert abs((out[hit] == 255).mean() - 0.5) < 0.05


def test_shot_noise_counts_photons_in_thirds_and_keeps_the_mean():
    x = np.full((16, S, S), 25, np.uint8)
    out = corrupt(x, "shot_noise", 0)
    assert set(np.unique(out)) <= {0, 85, 170, 255}  # Poisson(3x) / 3
    assert abs(out.mean() / 25 - 1) < 0.05


def test_canny_marks_only_the_border_of_a_filled_square():
    x = block(2, slice(8, 20), slice(8, 20))
    out = corrupt(x, "canny_edges", 0)
    assert set(np.unique(out)) == {0, 255}
    rows, cols = np.nonzero(out[0])
    ring = np.maximum(np.abs(rows - 13.5), np.abs(cols - 13.5))
    assert ring.min() >= 5 and ring.max() <= 7
    for side in (rows.min(), rows.max(), cols.min(), cols.max()):
        assert abs(abs(side - 13.5) - 6) <= 1


def test_dotted_line_inks_only_column_pairs_2_3_6_7_and_so_on():
    out = corrupt(np.zeros((32, S, S), np.uint8), "dotted_line", 0)
    allowed = (np.arange(S) % 4 >= 2) & (np.arange(S) != 27)
    inked = out.any(axis=1)
    assert not inked[:, ~allowed].any()
    assert inked[:, allowed].all()
    assert len({tuple(image.argmax(axis=0)[allowed]) for image in out}) > 20  # each image its own line


def test_zigzag_inks_columns_2_to_25_in_a_zigzag():
    out = corrupt(np.zeros((32, S, S), np.uint8), "zigzag", 0).astype(float)
    inked = out.any(axis=1)
    assert not inked[:, :2].any() and not inked[:, 26:].any()  # arms from column 2 to 25
    assert inked[:, 2:25].all(axis=1).mean() > 0.8  # all of them, unless the zigzag leaves the image at an edge
    for image in out:
        cols = np.arange(2, 25)[image.sum(axis=0)[2:25] > 0]
        centre = (image * ROWS).sum(axis=0)[cols] / image.sum(axis=0)[cols]
        residual = centre - np.polyval(np.polyfit(cols, centre, 1), cols)
        assert np.abs(residual).max() > 1  # not a straight line


def test_motion_blur_smears_a_dot_one_sidedly_along_an_angle_within_45_degrees():
    x = block(16, 14, 20)
    out = corrupt(x, "motion_blur", 0)
    np.testing.assert_allclose(out.sum(axis=(1, 2)), 255, rtol=0.1)
    angles = []
    for image in out:
        rows, cols = np.nonzero(image)
        assert cols.max() == 20 and cols.min() <= 14  # the dot is dragged to one side only (left)
        assert (np.abs(rows - 14) <= 20 - cols + 1).all()  # within 45 degrees of that side
        angles.append(principal_angle(image))
    assert np.ptp(angles) > 0.3


def test_glass_blur_blurs_rows_only_as_the_reference_did_and_keeps_the_ink():
    vertical, horizontal = block(32, slice(4, 24), 13), block(32, 13, slice(4, 24))
    out_v, out_h = corrupt(vertical, "glass_blur", 0), corrupt(horizontal, "glass_blur", 0)
    assert out_v.max(axis=(1, 2)).mean() > 210  # a vertical line survives the vertical-only blur (swaps aside)
    assert out_h.max() < 160  # a horizontal one is spread over rows
    x = strokes(8)
    out = corrupt(x, "glass_blur", 0)
    np.testing.assert_allclose(out.sum(axis=(1, 2)), x.sum(axis=(1, 2)), rtol=0.05)


def test_fog_adds_a_smooth_haze_of_strength_3_scaled_by_the_image_max():
    x = strokes(8)
    out = corrupt(x, "fog", 0).astype(float)
    haze = (4 * out - x) / 3 / 255  # out = (x + 3 haze) / (1 + 3) when the image's max is 1
    assert haze.min() > -0.01 and haze.max() < 1.01
    assert haze.std(axis=(1, 2)).min() > 0.02
    assert np.abs(np.diff(haze, axis=2)).mean() < 0.05  # smooth, not pixel noise
    assert not np.allclose(haze[0], haze[1])
    np.testing.assert_array_equal(corrupt(np.zeros((2, S, S), np.uint8), "fog", 0), 0)  # max 0: stays blank


def test_spatter_paints_mud_of_colour_63_with_weight_from_0_8():
    out = corrupt(np.zeros((32, S, S), np.uint8), "spatter", 0)
    mud = out[out > 0]
    assert mud.size > 0 and mud.min() >= 50 and mud.max() <= 63


def test_fog_is_the_reference_plasma_fractal_given_the_same_draws():
    """MNIST-C plasma_fractal as written there (float64, one map), fed the draws _plasma makes."""
    draws = np.random.default_rng(9)

    def reference(mapsize=256, wibbledecay=1.4):
        m = np.zeros((mapsize, mapsize))
        step, wibble = mapsize, 100.0

        def wibbledmean(a):
            return a / 4 + wibble * (draws.random(a.shape, dtype=np.float32) * 2 * wibble - wibble)

        while step >= 2:
            h = step // 2
            corner = m[0::step, 0::step]
            sq = corner + np.roll(corner, -1, axis=0)
            sq += np.roll(sq, -1, axis=1)
            m[h::step, h::step] = wibbledmean(sq)
            dr, ul = m[h::step, h::step], m[0::step, 0::step]
            m[0::step, h::step] = wibbledmean(dr + np.roll(dr, 1, axis=0) + ul + np.roll(ul, -1, axis=1))
            m[h::step, 0::step] = wibbledmean(dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=0))
            step //= 2
            wibble /= wibbledecay
        m -= m.min()
        return m / m.max()

    ours = corruptions._plasma(1, np.random.default_rng(9), wibbledecay=1.4)[0]
    expected = reference()[:S, :S]
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    x = strokes(1) / 510  # max 0.5
    fogged = corruptions.fog(x, np.random.default_rng(9))  # MNIST-C fog at severity 5: c = 3, wibbledecay 1.4
    np.testing.assert_allclose(fogged[0], np.clip((x[0] + 3 * expected) * 0.5 / 3.5, 0, 1), atol=1e-5)


def test_glass_blur_swaps_as_the_reference_loop_does():
    x = strokes(3) / 255
    ours = corruptions.glass_blur(x, np.random.default_rng(4))
    draws = np.random.default_rng(4)
    flips = draws.random((2, 26, 26, 3)) < 0.5
    shifts = draws.integers(-1, 1, size=(2, 26, 26, 2, 3))
    for k in range(3):
        image = np.uint8(ndimage.gaussian_filter(x[k], (0.7, 0), mode="nearest") * 255)
        for it in range(2):
            for i, h in enumerate(range(27, 1, -1)):
                for j, w in enumerate(range(27, 1, -1)):
                    if flips[it, i, j, k]:
                        dx, dy = shifts[it, i, j, :, k]
                        image[h, w], image[h + dy, w + dx] = image[h + dy, w + dx], image[h, w]
        expected = np.clip(ndimage.gaussian_filter(image / 255, (0.7, 0), mode="nearest"), 0, 1)
        np.testing.assert_allclose(ours[k], expected, atol=1e-12)


def test_motion_blur_is_imagemagicks_kernel_pixel_by_pixel():
    x = strokes(2) / 255
    ours = corruptions.motion_blur(x, np.random.default_rng(8))
    angles = np.deg2rad(np.random.default_rng(8).uniform(-45, 45, 2))
    kernel = np.exp(-np.arange(21) ** 2 / 18)
    kernel /= kernel.sum()
    for k, a in enumerate(angles):  # MotionBlurImage: offset i is (ceil(i cos a - 0.5), ceil(i sin a - 0.5)), edge
        offsets = [(int(np.ceil(i * np.cos(a) - 0.5)), int(np.ceil(i * np.sin(a) - 0.5))) for i in range(21)]
        expected = np.zeros((S, S))
        for r in range(S):
            for c in range(S):
                expected[r, c] = sum(w * x[k, min(max(r + dy, 0), S - 1), min(max(c + dx, 0), S - 1)]
                                     for w, (dx, dy) in zip(kernel, offsets, strict=True))
        np.testing.assert_allclose(ours[k], expected, atol=1e-12)
