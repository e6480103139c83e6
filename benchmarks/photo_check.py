"""How well `mnist predict` reads photos: held-out real items as phone or product photos (tests/photos.py) against
the raw arrays of the same items, per medium; and the time and peak memory of reading very large pictures.

    python benchmarks/photo_check.py --run mnist=RUN_DIR --run fashion_mnist=RUN_DIR \
        --data mnist=../shared/data/mnist-small --data fashion_mnist=/usr/share/datasets/fashion-mnist \
        [--items 400] [--figure docs/images/predict-before-after.png]

The items are the last ones of each test split (never trained on). Prints one line per dataset and medium.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from photos import MEDIA, digit_photo, product_photo  # noqa: E402 - the tests' generator


def photo_ratio(run_dir: str, dataset: str, data_dir: str, items: int, folder: Path, seed: int = 7) -> list:
    """Rows (dataset, medium, n, raw accuracy, photo accuracy) and the files, predictions and labels."""
    from mnist_pipeline.data.sources import load_raw
    from mnist_pipeline.inference import predict_files

    raw = load_raw(dataset, data_dir)
    x, y = raw.x_test[-items:], raw.y_test[-items:]
    rng = np.random.default_rng(seed)
    files, media = [], []
    for i, item in enumerate(x):
        medium = str(rng.choice(MEDIA)) if dataset == "mnist" else "product photo"
        table = bool(rng.random() < 0.4) if dataset == "mnist" else False
        data = digit_photo(item, rng, medium, table=table) if dataset == "mnist" else product_photo(item, rng)
        files.append(folder / f"{dataset}-{i:04d}.jpg")
        files[-1].write_bytes(data)
        media.append(medium + (" on a table" if table else ""))
    np.save(folder / f"{dataset}-raw.npy", x)
    raw_right = np.array([p.top[0][0] == t for p, t in zip(predict_files(run_dir, [str(folder / f"{dataset}-raw.npy")]),
                                                          y, strict=True)])
    predictions = predict_files(run_dir, [str(f) for f in files])
    photo_right = np.array([bool(p.top) and p.top[0][0] == t for p, t in zip(predictions, y, strict=True)])
    media = np.array(media)
    rows = [(dataset, "all", len(y), raw_right.mean(), photo_right.mean())]
    rows += [(dataset, m, int((media == m).sum()), raw_right[media == m].mean(), photo_right[media == m].mean())
             for m in sorted(set(media)) if len(set(media)) > 1]
    return rows, files, predictions, y


def read_cost(path: Path) -> tuple[float, int]:
    """Seconds and peak resident memory (MiB) of reading and preparing one picture, in a fresh process."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent (here TensorFlow-sized) across exec.
    script = ("import sys, time\nfrom mnist_pipeline.data.images import load_items\n"
              "t = time.perf_counter(); load_items(sys.argv[1], 'mnist')\n"
              "peak = next(line for line in open('/proc/self/status') if line.startswith('VmHWM'))\n"
              "print(time.perf_counter() - t, int(peak.split()[1]) // 1024)")
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True)
    seconds, peak = done.stdout.split()[-2:]
    return float(seconds), int(peak)


def large_pictures(folder: Path, item: np.ndarray) -> list[tuple[str, float, int]]:
    from PIL import Image

    rng = np.random.default_rng(0)
    jpeg = folder / "phone-50mp.jpg"
    jpeg.write_bytes(digit_photo(item, rng, "pen", size=(8660, 5773), table=False))
    png = folder / "scan-144mp.png"
    photo = Image.open(io.BytesIO(digit_photo(item, rng, "pencil", size=(3000, 3000), table=False))).convert("L")
    photo.resize((12000, 12000), Image.Resampling.BILINEAR).save(png, compress_level=1)
    return [(name, *read_cost(path)) for name, path in (("50 MP JPEG (8660x5773)", jpeg),
                                                        ("144 MP PNG (12000x12000)", png))]


def figure(path: Path, files: list[Path], predictions: list, count: int = 6) -> None:
    """Photos and the 28x28 images the model saw from them, side by side (what --save-input writes)."""
    from PIL import Image, ImageOps

    tile = 160
    sheet = Image.new("RGB", (2 * tile * 3, tile * ((count + 2) // 3)), "white")
    for k, (file, p) in enumerate(zip(files[:count], predictions[:count], strict=True)):
        photo = ImageOps.exif_transpose(Image.open(file)).convert("RGB")
        photo.thumbnail((tile - 8, tile - 8))
        seen = Image.fromarray(p.seen).resize((tile - 8, tile - 8), Image.Resampling.NEAREST).convert("RGB")
        x, y = (k % 3) * 2 * tile, (k // 3) * tile
        sheet.paste(photo, (x + 4, y + 4))
        sheet.paste(seen, (x + tile + 4, y + 4))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="append", default=[], metavar="DATASET=RUN_DIR")
    parser.add_argument("--data", action="append", default=[], metavar="DATASET=DIR")
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--figure", type=Path)
    args = parser.parse_args()
    runs, data = dict(a.split("=", 1) for a in args.run), dict(a.split("=", 1) for a in args.data)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        print("dataset        medium                 n  raw arrays  photos  ratio")
        shown = None
        for dataset, run_dir in runs.items():
            rows, files, predictions, _ = photo_ratio(run_dir, dataset, data[dataset], args.items, folder)
            shown = shown or (files, predictions)
            for name, medium, n, raw, photo in rows:
                print(f"{name:14s} {medium:20s} {n:4d}  {raw:10.3f}  {photo:6.3f}  {photo / raw:5.3f}")
        print(f"({time.perf_counter() - started:.0f} s)")
        if "mnist" in data:
            from mnist_pipeline.data.sources import load_raw

            item = load_raw("mnist", data["mnist"]).x_test[-1]
            for name, seconds, peak in large_pictures(folder, item):
                print(f"read and prepare {name}: {seconds:.2f} s, peak memory {peak} MiB (the whole process)")
        if args.figure and shown:
            figure(args.figure, *shown)
            print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
