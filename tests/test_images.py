import numpy as np
import pytest
from PIL import Image

from conftest import render_digit
from mnist_pipeline.data.images import load_items
from mnist_pipeline.data.recipes import mnist_style
from mnist_pipeline.errors import DataError


def centre_of_mass(image):
    rows, cols = np.indices(image.shape)
    total = image.sum()
    return (rows * image).sum() / total, (cols * image).sum() / total


@pytest.mark.parametrize("light_background", [True, False])
def test_any_size_image_becomes_a_centred_light_on_dark_digit(tmp_path, light_background):
    ink = render_digit(4, np.random.default_rng(0), canvas=150, size=90)  # dark ink on white
    pixels = ink if light_background else 255 - ink
    Image.fromarray(pixels.astype(np.uint8)).resize((150, 110)).save(tmp_path / "d.png")
    ((name, digit, warning),) = [(d.source, d.image, d.warning) for d in load_items(tmp_path / "d.png", "mnist")]
    assert name == str(tmp_path / "d.png")
    assert warning is None
    assert digit.shape == (28, 28)
    assert digit.dtype == np.uint8
    assert digit.max() == 255  # light digit, dark border
    assert np.all(digit[0] == 0)
    assert np.all(digit[:, 0] == 0)
    rows, cols = np.nonzero(digit > 25)
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 <= 21  # fits MNIST's 20x20 box
    assert centre_of_mass(digit.astype(float)) == pytest.approx((13.5, 13.5), abs=0.8)


@pytest.mark.parametrize("background, ink", [(255, 0), (0, 255), (128, 230), (128, 30), (200, 120), (60, 140)],
                         ids=["black-on-white", "white-on-black", "light-on-mid-grey", "dark-on-mid-grey",
                              "grey-on-light", "light-on-dark-grey"])
def test_the_digit_survives_any_polarity_and_background(background, ink):
    stroke = (255 - render_digit(7, np.random.default_rng(1), canvas=120, size=80)) / 255.0  # 1 on the stroke
    reference = mnist_style(stroke * 255.0)
    digit = mnist_style(background + (ink - background) * stroke)
    assert digit.max() == 255  # light digit on black, whatever the paper
    assert np.all(digit[0] == 0)
    assert np.corrcoef(digit.ravel(), reference.ravel())[0, 1] > 0.98


def test_rgba_jpeg_and_blank_images(tmp_path):
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[10:30, 18:22] = (0, 0, 0, 255)  # opaque black bar on a transparent background
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    Image.fromarray(np.full((30, 30, 3), 255, np.uint8)).save(tmp_path / "blank.jpg")
    (bar,) = load_items(tmp_path / "t.png", "mnist")
    assert bar.image.max() == 255
    assert bar.image[:, 13:15].sum() > bar.image[:, :5].sum()
    (blank,) = load_items(tmp_path / "blank.jpg", "mnist")
    assert blank.image is None
    assert "blank or nearly one colour" in blank.warning


def test_near_constant_images_get_a_warning_not_an_amplified_guess(tmp_path):
    noise = 128 + np.random.default_rng(0).integers(-5, 6, size=(60, 60))  # grey paper, no ink
    Image.fromarray(noise.astype(np.uint8)).save(tmp_path / "paper.png")
    np.save(tmp_path / "zeros.npy", np.zeros((2, 28, 28)))
    assert [d.image for d in load_items(tmp_path / "paper.png", "mnist")] == [None]
    assert [d.warning is not None for d in load_items(tmp_path / "zeros.npy", "mnist")] == [True, True]


def test_npy_arrays_single_batch_and_unit_scale(tmp_path):
    digits = np.random.default_rng(1).integers(0, 256, size=(3, 28, 28)).astype(np.uint8)
    np.save(tmp_path / "one.npy", digits[0])
    np.save(tmp_path / "batch.npy", digits[..., None])
    np.save(tmp_path / "unit.npy", digits[0] / 255.0)
    (one,) = load_items(tmp_path / "one.npy", "mnist")
    np.testing.assert_array_equal(one.image, digits[0])  # already MNIST-shaped: used as it is
    batch = load_items(tmp_path / "batch.npy", "mnist")
    assert [d.source for d in batch] == [f"{tmp_path / 'batch.npy'}[{i}]" for i in range(3)]
    (unit,) = load_items(tmp_path / "unit.npy", "mnist")
    assert np.abs(unit.image.astype(int) - digits[0]).max() <= 1


@pytest.mark.parametrize("name, content, words", [
    ("x.png", b"not an image", ["not a readable image"]),
    ("x.txt", b"hello", ["unsupported file type .txt"]),
    ("x.npy", b"nope", ["not an .npy array"]),
])
def test_bad_files(tmp_path, name, content, words):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError) as info:
        load_items(tmp_path / name, "mnist")
    assert str(info.value).startswith(str(tmp_path / name))
    for word in words:
        assert word in str(info.value)


def test_npy_of_wrong_shape(tmp_path):
    np.save(tmp_path / "w.npy", np.zeros((2, 3, 4, 5)))
    with pytest.raises(DataError, match=r"is not a layout of images"):
        load_items(tmp_path / "w.npy", "mnist")


def test_mnist_style_keeps_a_28x28_digit_in_the_box():
    image = np.zeros((28, 28), np.float32)
    image[2:26, 12:16] = 255
    out = mnist_style(image)
    rows, _ = np.nonzero(out > 25)
    assert rows.max() - rows.min() + 1 <= 21
