import numpy as np
import pytest
import tensorflow as tf

from mnist_pipeline.data.augment import Augmentation

SEED = tf.constant([3, 7], tf.int64)


def bars(n=64, rows=slice(12, 16), cols=slice(4, 24)):
    """n copies of a horizontal bar (rows 12-15, columns 4-23)."""
    x = np.zeros((n, 28, 28, 1), np.float32)
    x[:, rows, cols] = 1.0
    return x


def centre_of_mass(images):
    weights = images[..., 0]
    rows, cols = np.mgrid[:28, :28]
    total = weights.sum(axis=(1, 2))
    return (weights * rows).sum(axis=(1, 2)) / total, (weights * cols).sum(axis=(1, 2)) / total


def test_everything_off_is_disabled_and_returns_the_images():
    x = bars(4)
    assert not Augmentation().enabled
    np.testing.assert_array_equal(np.asarray(Augmentation()(tf.constant(x), SEED)), x)


def test_the_same_seed_gives_the_same_warps_and_another_seed_others():
    augmentation = Augmentation(rotation=0.05, translation=0.1, zoom=0.1, horizontal_flip=True)
    x = tf.constant(bars(16))
    first, again = augmentation(x, SEED), augmentation(x, SEED)
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    assert not np.allclose(first.numpy(), augmentation(x, SEED + 1).numpy())
    assert first.shape == x.shape
    assert first.dtype == tf.float32


def test_flip_mirrors_some_images_exactly_and_leaves_the_rest():
    x = bars(32, cols=slice(2, 8))  # off-centre, so a mirror is visible
    out = np.asarray(Augmentation(horizontal_flip=True)(tf.constant(x), SEED))
    mirrored = [np.array_equal(o, x[0][:, ::-1]) for o in out]
    unchanged = [np.array_equal(o, x[0]) for o in out]
    assert all(m or u for m, u in zip(mirrored, unchanged, strict=True))
    assert any(mirrored)
    assert any(unchanged)


def test_translation_moves_the_image_within_its_range_and_keeps_its_mass():
    x = bars(64)
    out = np.asarray(Augmentation(translation=0.1)(tf.constant(x), SEED))
    (r0, c0), (r1, c1) = centre_of_mass(x), centre_of_mass(out)
    shift_r, shift_c = r1 - r0, c1 - c0
    assert np.abs(shift_r).max() <= 2.8 + 1e-3
    assert np.abs(shift_c).max() <= 2.8 + 1e-3
    assert np.abs(shift_r).max() > 1.5  # the range is used
    assert np.abs(shift_c).max() > 1.5
    assert shift_r.std() > 0.5  # each image its own shift
    np.testing.assert_allclose(out.sum(axis=(1, 2, 3)), x[0].sum(), rtol=1e-4)  # bar stays inside


def test_rotation_tilts_a_bar_within_the_range():
    x = bars(64)
    out = np.asarray(Augmentation(rotation=0.03)(tf.constant(x), SEED))  # +-10.8 degrees
    angles = []
    for image in out[..., 0]:
        rows, cols = np.nonzero(image > 0.5)
        angles.append(np.degrees(np.arctan(np.polyfit(cols, rows, 1)[0])))
    angles = np.abs(angles)
    assert angles.max() <= 10.8 + 1.5
    assert angles.max() > 5


def test_zoom_scales_the_bar_length_within_the_range():
    x = bars(64)
    out = np.asarray(Augmentation(zoom=0.2)(tf.constant(x), SEED))
    lengths = (out[:, 14, :, 0] > 0.5).sum(axis=1)  # the bar is 20 px long
    assert lengths.min() >= 20 / 1.2 - 1
    assert lengths.max() <= 20 / 0.8 + 1
    assert lengths.min() < 19  # both in and out
    assert lengths.max() > 21


@pytest.mark.parametrize("jit_compile", [False, True])
def test_the_compilable_warp_gives_the_pixels_of_tensorflows_kernel(jit_compile):
    from mnist_pipeline.data.augment import resample_bilinear

    augmentation = Augmentation(rotation=0.05, translation=0.15, zoom=0.2, horizontal_flip=True, fill_value=-0.42)
    x = tf.constant(np.random.default_rng(0).random((64, 28, 28, 1), dtype=np.float32))
    transforms = augmentation.transforms(x, SEED)
    kernel = tf.raw_ops.ImageProjectiveTransformV3(images=x, transforms=transforms, output_shape=[28, 28],
                                                   fill_value=-0.42, interpolation="BILINEAR", fill_mode="CONSTANT")
    resample = tf.function(lambda images, t: resample_bilinear(images, t, -0.42), jit_compile=jit_compile)
    gathered = resample(x, transforms).numpy()
    assert np.abs(kernel.numpy() - x.numpy()).max() > 0.5  # the warps did move pixels
    np.testing.assert_allclose(gathered, kernel.numpy(), atol=1e-5 if not jit_compile else 1e-4)  # rounding only


def test_augmentation_compiled_by_xla_is_reproducible_and_keeps_its_ranges():
    def compiled(augmentation):
        return tf.function(lambda images, seed: augmentation(images, seed, compilable=True), jit_compile=True)

    warp = compiled(Augmentation(translation=0.1, horizontal_flip=True))
    x = bars(64, cols=slice(4, 10))  # off-centre, and 2.8 px from any edge
    first, again, other = (warp(tf.constant(x), s).numpy() for s in (SEED, SEED, SEED + 1))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    np.testing.assert_allclose(first.sum(axis=(1, 2, 3)), x[0].sum(), rtol=1e-4)  # shifted <= 2.8 px: all inside
    mirrored = centre_of_mass(first)[1] > 14
    assert mirrored.any()
    assert (~mirrored).any()
    erase = compiled(Augmentation(erasing=0.5, fill_value=-1.0))
    erased = (erase(tf.constant(np.ones((200, 28, 28, 1), np.float32)), SEED).numpy() == -1.0).any(axis=(1, 2, 3))
    assert 0.35 < erased.mean() < 0.65


@pytest.mark.parametrize("fill", [0.0, -0.42])
def test_pixels_from_outside_the_image_get_the_fill_value(fill):
    x = np.full((16, 28, 28, 1), 5.0, np.float32)
    out = np.asarray(Augmentation(translation=0.2, fill_value=fill)(tf.constant(x), SEED))
    values = np.unique(np.round(out, 4))
    assert fill in values
    assert 5.0 in values


@pytest.mark.parametrize("fill", [0.0, -0.42])
def test_erasing_blanks_one_rectangle_of_2_to_40_percent_in_the_asked_share_of_images(fill):
    x = np.full((400, 28, 28, 1), 5.0, np.float32)
    out = np.asarray(Augmentation(erasing=0.5, fill_value=fill)(tf.constant(x), SEED))[..., 0]
    fill = np.float32(fill)
    erased = out == fill
    assert set(np.unique(out)) <= {fill, 5.0}  # every pixel kept or blanked, nothing in between
    hit = erased.any(axis=(1, 2))
    assert 0.4 < hit.mean() < 0.6
    for mask in erased[hit]:
        rows, cols = mask.any(axis=1), mask.any(axis=0)
        assert mask.sum() == rows.sum() * cols.sum()  # one solid rectangle
        assert 0.02 * 784 - 6 <= mask.sum() <= 0.4 * 784 + 30  # its area range, give or take the rounding
    areas = erased[hit].sum(axis=(1, 2))
    assert areas.min() < 60  # the range is used
    assert areas.max() > 200


def test_erasing_draws_its_own_numbers_so_the_warps_of_a_seed_stay_the_same():
    x = tf.constant(bars(64))
    warped = Augmentation(translation=0.1, fill_value=-1.0)(x, SEED).numpy()
    both = Augmentation(translation=0.1, erasing=1.0, fill_value=-1.0)(x, SEED).numpy()
    kept = both != -1.0
    assert (~kept).any(axis=(1, 2, 3)).all()  # erasing 1.0: every image has its rectangle
    np.testing.assert_array_equal(both[kept], warped[kept])
    assert Augmentation(erasing=0.3).enabled
    assert not Augmentation(erasing=0.3).warps


def test_from_config_takes_the_sections_ranges_and_is_none_when_all_are_off():
    from mnist_pipeline.config import load_config

    section = load_config(None, ["data.augmentation.translation=0.1", "data.augmentation.horizontal_flip=true",
                                 "data.augmentation.erasing=0.25",
                                 "data.augmentation.test_time_flip=true"]).data.augmentation
    assert Augmentation.from_config(section, fill_value=-0.5) == Augmentation(
        translation=0.1, horizontal_flip=True, erasing=0.25, fill_value=-0.5)
    assert Augmentation.from_config(load_config(None).data.augmentation) is None


def test_background_is_the_normalized_value_of_a_blank_pixel():
    from mnist_pipeline.data.prepare import fit_normalization

    images = np.random.default_rng(0).integers(0, 256, (20, 28, 28), dtype=np.uint8)
    for method in ("scale", "standardize"):
        normalization = fit_normalization(images, method)
        blank = normalization.apply(np.zeros((1, 28, 28), np.uint8))
        np.testing.assert_allclose(blank, normalization.background, rtol=1e-6)
