"""`mnist predict` on what users bring: phone photos of held-out digits and product photos of held-out Fashion items
(tests/photos.py makes them), arrays in every layout, folders, EXIF rotation, the unsure warning."""

from __future__ import annotations

import json
import os
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
from photos import digit_photo, product_photo
from PIL import Image

from conftest import run_mnist
from mnist_pipeline.data.images import LAYOUTS, load_items
from mnist_pipeline.data.recipes import mnist_style
from mnist_pipeline.errors import DataError
from mnist_pipeline.reports.metrics import unsure_threshold

REPO = Path(__file__).parent.parent
REAL_DATA = {"mnist": REPO.parent / "shared/data/mnist-small",
             "fashion_mnist": Path("/usr/share/datasets/fashion-mnist")}
# A photo is predicted nearly as well as the raw array of the same item: measured 0.95 (digits) and 0.97 (Fashion)
# on 300-400 items of models trained longer (docs/results.md); these small models and 120 items leave room.
RATIO_FLOOR = 0.85
HELD_OUT = 120


def real_data(dataset: str) -> Path:
    folder = REAL_DATA[dataset]
    if not (folder / "t10k-images-idx3-ubyte.gz").is_file():
        if os.environ.get("MNIST_CI"):
            pytest.fail(f"{folder}: real {dataset} data missing (CI has it: ../shared, apt dataset-fashion-mnist)")
        pytest.skip(f"{folder}: real {dataset} data not here")
    return folder


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    """A small CNN on real MNIST digits and an MLP on real Fashion-MNIST items, trained briefly."""
    from mnist_pipeline.config import load_config
    from mnist_pipeline.pipeline import run

    out = tmp_path_factory.mktemp("real")
    runs = {}
    for dataset, config, epochs in (("mnist", "smoke", 3), ("fashion_mnist", "mlp_fashion", 3)):
        folder = REAL_DATA[dataset]
        if not (folder / "t10k-images-idx3-ubyte.gz").is_file():
            continue
        cfg = load_config(REPO / f"configs/{config}.yaml", ["data.subset=3000", "training.precision=float32"],
                          {"training.epochs": epochs, "data.data_dir": str(folder), "output.dir": str(out),
                           "training.device": "cpu"})
        runs[dataset] = run(cfg).run_dir
    return runs


@pytest.mark.slow  # models trained on real digits and clothes, then their photos predicted
@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_photos_are_predicted_nearly_as_well_as_the_raw_arrays(dataset, real_runs, tmp_path):
    from mnist_pipeline.data.sources import load_raw
    from mnist_pipeline.inference import predict_files

    raw = load_raw(dataset, str(real_data(dataset)))
    items, labels = raw.x_test[-HELD_OUT:], raw.y_test[-HELD_OUT:]  # never seen in training
    rng = np.random.default_rng(11)
    files = []
    for i, item in enumerate(items):
        (tmp_path / f"{i:03d}.jpg").write_bytes(digit_photo(item, rng) if dataset == "mnist"
                                                 else product_photo(item, rng))
        files.append(str(tmp_path / f"{i:03d}.jpg"))
    np.save(tmp_path / "raw.npy", items)
    from_arrays = predict_files(real_runs[dataset], [str(tmp_path / "raw.npy")])
    raw_right = np.mean([p.top[0][0] == y for p, y in zip(from_arrays, labels, strict=True)])
    photo_right = np.mean([bool(p.top) and p.top[0][0] == y
                           for p, y in zip(predict_files(real_runs[dataset], files), labels, strict=True)])
    assert raw_right > 0.7  # the model works on the arrays: the comparison means something
    assert photo_right >= RATIO_FLOOR * raw_right, (photo_right, raw_right)


def stroke_image(size=(300, 240)) -> np.ndarray:
    """Dark ink on white paper: a thick '7'-like stroke, (H, W) float32."""
    small = np.full((240, 300), 235.0, np.float32)  # drawn at 300x240, then brought to `size`
    small[60:80, 80:220] = 30
    for row in range(80, 200):
        small[row, 200 - (row - 80) // 2: 220 - (row - 80) // 2] = 30
    return np.array(Image.fromarray(small).resize(size, Image.Resampling.BILINEAR), np.float32)


def test_a_lighting_gradient_and_a_shadow_do_not_survive_into_the_input():
    clean = mnist_style(stroke_image())
    yy, xx = np.mgrid[0:240, 0:300]
    shadow = 1 - 0.4 / (1 + np.exp(-(yy + xx - 330) / 12.0))  # a soft-edged shadow over one corner
    light = (1 - 0.45 * xx / 300) * shadow  # under a lamp on the left
    lit = mnist_style(stroke_image() * light)
    assert np.corrcoef(clean.ravel(), lit.ravel())[0, 1] > 0.95
    assert lit[lit < 128].mean() < 8  # the background is black, not a grey wedge


def corner_shadow(height: int, width: int) -> np.ndarray:
    """A hand's or a phone's soft shadow over one corner of the page: 40% darker, a penumbra 8% wide."""
    yy, xx = np.mgrid[0:height, 0:width]
    return 1 - 0.4 * np.clip((xx - 0.6 * width) / (0.08 * width), 0, 1) * np.clip((yy - 0.6 * height) / (0.08 * width),
                                                                                 0, 1)


def test_a_shadow_over_a_corner_of_the_page_is_not_ink():
    page = np.full((400, 600), 235.0, np.float32)
    page[40:280, 60:360] = stroke_image((300, 240))  # the digit in the upper left, out of the shadow
    seen = mnist_style(page * corner_shadow(400, 600) + np.random.default_rng(0).normal(0, 2, page.shape))
    assert np.corrcoef(mnist_style(stroke_image()).ravel(), seen.ravel())[0, 1] > 0.9


@pytest.mark.parametrize("light", ["even", "gradient", "corner shadow", "grain"])
def test_a_blank_page_is_nothing_to_classify_whatever_its_light(light, tmp_path):
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:400, 0:600]
    page = {"even": np.full((400, 600), 230.0), "gradient": 240 - 60 * xx / 600,
            "corner shadow": 235 * corner_shadow(400, 600), "grain": rng.uniform(200, 240, (400, 600))}[light]
    page = page + rng.normal(0, 2, page.shape)
    Image.fromarray(page.clip(0, 255).astype(np.uint8)).save(tmp_path / "page.jpg", quality=80)
    (item,) = load_items(tmp_path / "page.jpg", "mnist")
    assert item.image is None
    assert item.warning.endswith("nothing to classify")


@pytest.mark.parametrize("polarity", ["white on black", "black on white"])
def test_a_drawing_that_fills_its_canvas_keeps_its_strokes(polarity, tmp_path):
    canvas = 255 - stroke_image((400, 400))  # light strokes on black, reaching close to the edges
    canvas = canvas[20:380, 40:400]
    drawn = canvas if polarity == "white on black" else 255 - canvas
    Image.fromarray(drawn.clip(0, 255).astype(np.uint8)).save(tmp_path / "canvas.png")
    (item,) = load_items(tmp_path / "canvas.png", "mnist")
    with_margins = mnist_style(255 - stroke_image((400, 400)))
    assert np.corrcoef(item.image.ravel(), with_margins.ravel())[0, 1] > 0.95


def test_empty_and_heic_files_get_their_own_messages(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "IMG_0001.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic")
    with pytest.raises(DataError, match=r"empty\.jpg: the file is empty \(0 bytes\)$"):
        load_items(tmp_path / "empty.jpg", "mnist")
    with pytest.raises(DataError, match="unsupported file type .HEIC; use PNG, JPEG, BMP, GIF, WebP, TIFF or .npy; "
                                        "convert HEIC/HEIF photos to JPEG first"):
        load_items(tmp_path / "IMG_0001.HEIC", "mnist")


def test_a_table_along_the_edge_of_the_photo_is_not_part_of_the_digit():
    photo = stroke_image()
    photo[:, :30] = 90  # a dark table along the left edge
    photo[:25, :] = 160  # and a lighter one along the top
    seen = mnist_style(photo)
    assert np.corrcoef(mnist_style(stroke_image()).ravel(), seen.ravel())[0, 1] > 0.95


def test_a_notebooks_ruled_lines_are_not_part_of_the_digit():
    photo = stroke_image()
    for row in (20, 40, 215, 230):  # rules above and below the digit, the faint blue of a school notebook
        photo[row: row + 2, :] = 175
    photo[:, 24:26] = 150  # and its margin line
    photo = photo * np.linspace(0.85, 1.0, 300) + np.random.default_rng(2).normal(0, 2, photo.shape)  # a photo
    seen = mnist_style(photo)
    assert np.corrcoef(mnist_style(stroke_image()).ravel(), seen.ravel())[0, 1] > 0.95


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_a_28x28_picture_is_taken_as_the_dataset_makes_them_whatever_its_polarity(dataset, tmp_path):
    item = np.zeros((28, 28), np.uint8)
    item[3:25, 2:26] = 180  # a Fashion-like item spanning the width, light on black
    item[6:20, 10:18] = 90
    Image.fromarray(item).save(tmp_path / "as-is.png")
    Image.fromarray(255 - item).save(tmp_path / "negated.png")
    np.save(tmp_path / "negated.npy", 255 - item)
    for name in ("as-is.png", "negated.png", "negated.npy"):
        (got,) = load_items(tmp_path / name, dataset)
        np.testing.assert_array_equal(got.image, item)


def test_a_fashion_photo_is_trimmed_resized_to_28_and_negated_not_boxed_like_a_digit(tmp_path):
    item = np.zeros((28, 28), np.uint8)
    item[2:26, 9:19] = 200  # a trouser-like item, tall and narrow, touching the top and bottom
    (tmp_path / "t.jpg").write_bytes(product_photo(item, np.random.default_rng(0), size=400))
    (fashion,) = load_items(tmp_path / "t.jpg", "fashion_mnist")
    rows, cols = np.nonzero(fashion.image > 40)
    assert rows.min() <= 1  # the longest edge is 28, not MNIST's 20
    assert rows.max() >= 26
    assert cols.min() >= 8  # centred, black around
    assert cols.max() <= 20
    assert fashion.image[0:2, :5].max() < 10
    (digit,) = load_items(tmp_path / "t.jpg", "mnist")
    rows, _ = np.nonzero(digit.image > 40)
    assert rows.max() - rows.min() <= 21  # the same photo for an MNIST run: its 20x20 box


LAYOUT_CASES = {
    "(28, 28)": (lambda d: d[0], 1),
    "(N, 28, 28)": (lambda d: d, 3),
    "(N, 28, 28, 1)": (lambda d: d[..., None], 3),
    "(N, 784)": (lambda d: d.reshape(3, 784), 3),
    "(784,)": (lambda d: d[0].reshape(784), 1),
    "0-1 floats": (lambda d: d / 255.0, 3),
    "(H, W, 3)": (lambda d: np.repeat(d[0][..., None], 3, axis=-1), 1),
    "(H, W, 4)": (lambda d: np.concatenate([np.repeat(255 - d[0][..., None], 3, axis=-1),
                                            np.full((28, 28, 1), 255, np.uint8)], axis=-1), 1),
    "(N, H, W, 3)": (lambda d: np.repeat(d[..., None], 3, axis=-1), 3),
    "dark on white": (lambda d: 255 - d, 3),
}


@pytest.mark.parametrize("layout", list(LAYOUT_CASES))
def test_arrays_in_every_layout_users_keep(layout, tmp_path):
    digits = np.zeros((3, 28, 28), np.uint8)
    for i in range(3):
        digits[i, 5:23, 8 + i * 3: 12 + i * 3] = 250  # light bars on black
    make, count = LAYOUT_CASES[layout]
    np.save(tmp_path / "a.npy", make(digits))
    items = load_items(tmp_path / "a.npy", "mnist")
    assert len(items) == count
    for item, digit in zip(items, digits, strict=False):
        assert np.abs(item.image.astype(int) - digit).max() <= 1, layout


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (28, 3), (5, 5, 3), (4, 28, 28, 2), (1, 2, 3, 4, 5)])
def test_arrays_in_other_layouts_are_refused_with_the_layouts_named(shape, tmp_path):
    np.save(tmp_path / "w.npy", np.zeros(shape, np.uint8) + 7)
    with pytest.raises(DataError) as info:
        load_items(tmp_path / "w.npy", "mnist")
    assert str(info.value) == f"{tmp_path / 'w.npy'}: shape {shape} is not a layout of images; accepted: {LAYOUTS}"


@pytest.mark.parametrize("values, words", [(np.full((28, 28), -0.5), "from -0.5 to -0.5"),
                                           (np.arange(784.0).reshape(28, 28) * 100, "pass pixel values 0-255")])
def test_standardized_or_16_bit_arrays_are_refused(values, words, tmp_path):
    np.save(tmp_path / "v.npy", values)
    with pytest.raises(DataError, match=words):
        load_items(tmp_path / "v.npy", "mnist")


def test_exif_orientation_is_applied(tmp_path):
    upright = mnist_style(stroke_image())
    stored = Image.fromarray(stroke_image().astype(np.uint8)).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display": how phones save a portrait photo
    stored.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    (item,) = load_items(tmp_path / "phone.jpg", "mnist")
    assert np.corrcoef(item.image.ravel(), upright.ravel())[0, 1] > 0.9


def test_a_huge_photo_reads_at_reduced_scale_and_a_bomb_is_refused_from_its_header(tmp_path):
    photo = Image.fromarray(stroke_image((6000, 4800)).astype(np.uint8))  # 29 megapixels
    photo.save(tmp_path / "big.jpg", quality=80)
    (item,) = load_items(tmp_path / "big.jpg", "mnist")
    assert np.corrcoef(item.image.ravel(), mnist_style(stroke_image()).ravel())[0, 1] > 0.9
    # PNGs whose headers claim 20,000 x 20,000 and 100,000 x 100,000 pixels, in a few hundred bytes.
    small = tmp_path / "small.png"
    Image.new("L", (8, 8)).save(small)
    for side, words in ((20_000, "20000x20000 pixels is more than the 150 megapixels read from a PNG file; "
                                 "save it as JPEG or scale it down"),
                        (100_000, "refused: its header claims over 9,600 megapixels, more than any photo "
                                  "(a decompression bomb?)")):
        data = bytearray(small.read_bytes())
        data[16:24] = side.to_bytes(4, "big") * 2  # IHDR's width and height...
        data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # ...and its checksum
        (tmp_path / "bomb.png").write_bytes(bytes(data))
        with pytest.raises(DataError) as info:
            load_items(tmp_path / "bomb.png", "mnist")
        assert str(info.value) == f"{tmp_path / 'bomb.png'}: {words}"


def test_unsure_threshold_is_where_validation_answers_fall_below_90_percent():
    # 20 answers at confidence 0.5 (half right), 80 at 0.95 (all right): the lower group is below 90%.
    probabilities = np.array([[0.5, 0.5]] * 20 + [[0.95, 0.05]] * 80)
    labels = np.array([0, 1] * 10 + [0] * 80)
    threshold = unsure_threshold(probabilities, labels)
    assert 0.5 < threshold < 0.95
    assert unsure_threshold(probabilities[20:], labels[20:]) == 0.0  # every answer right: never unsure
    assert unsure_threshold(probabilities[:20], labels[:20]) > 1.0  # a 50% model: every answer is unsure


@pytest.mark.slow  # models trained, then photographed digits predicted
def test_predict_folders_all_probabilities_and_the_unsure_warning(trained_runs, tmp_path):
    run_dir = trained_runs["mlp"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["unsure_below"] <= 1.0 + 1e-9
    # predict's probabilities are calibrated (the run's temperature), so is the level they are held against
    unsure_below = metrics["calibration"]["unsure_below"]
    folder = tmp_path / "pictures"
    folder.mkdir()
    Image.fromarray(stroke_image().astype(np.uint8)).save(folder / "b.png")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (28, 28)).astype(np.uint8)).save(folder / "a-noise.png")
    (folder / "notes.txt").write_text("not a picture")
    (tmp_path / "empty").mkdir()
    done = run_mnist("predict", run_dir, folder, tmp_path / "empty", "--json")
    assert done.returncode == 1  # the empty folder is an error; the pictures are still predicted
    payload = json.loads(done.stdout)
    assert [Path(p["file"]).name for p in payload] == ["a-noise.png", "b.png", "empty"]
    for p in payload[:2]:
        assert len(p["probabilities"]) == 10
        assert sum(p["probabilities"]) == pytest.approx(1, abs=1e-5)
        assert p["classes"] == [str(c) for c in range(10)]
        assert p["confidence"] == max(p["probabilities"])
        assert p["uncertain"] == (p["confidence"] < unsure_below)
    assert "no images in this folder" in payload[2]["error"]
    unsure = [p for p in payload[:2] if p["uncertain"]]
    for p in unsure:
        assert "unsure" in p["warning"]
        assert f"warning: {p['warning']}" in done.stderr
    text = run_mnist("predict", run_dir, folder)
    for p in payload[:2]:
        mark = "?" if p["uncertain"] else ""
        assert f"{p['file']}: {p['name']}{mark}  (top 3: " in text.stdout
    # The same run, had its validation answers been right less than 90% of the time at every confidence.
    doubtful = shutil.copytree(run_dir, tmp_path / "runs" / run_dir.name)
    calibration = {**metrics["calibration"], "unsure_below": 1.0 + 1e-9}
    (doubtful / "metrics.json").write_text(json.dumps({**metrics, "calibration": calibration}))
    done = run_mnist("predict", doubtful, folder / "b.png")
    assert done.returncode == 0
    assert done.stderr.startswith(f"warning: {folder / 'b.png'}: unsure: ")
    assert "this run's answers below 1.00 were right less than 90% of the time on validation" in done.stderr
    assert done.stdout.startswith(f"{folder / 'b.png'}: ")
    assert "?  (top 3: " in done.stdout
