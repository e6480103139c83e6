"""What identifies a run's inputs: the data's hash, the config as config.yaml pins it, and fingerprint.json.

A resumed or continued run is checked against these (see `resume`), so they must come out the same from any
source of the same digits and from any working directory.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np

from mnist_pipeline import runtime
from mnist_pipeline.config import RunConfig
from mnist_pipeline.resume import RUN_FORMAT, made_by, sha256_text


def fingerprint_data(raw) -> str:
    """The same digits give the same hash from any source."""
    return sha256_arrays([raw.x_train, raw.y_train, raw.x_test, raw.y_test])


def sha256_arrays(arrays) -> str:
    """SHA-256 over arrays, shapes and dtypes included."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(repr((array.shape, array.dtype.str)).encode())
        digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def reproducible(cfg: RunConfig) -> RunConfig:
    """The config as config.yaml stores it: the data folder actually read, as an absolute path (whether it
    came typed relative, from the config or from $MNIST_DATA_DIR), so that `mnist train --config
    RUN/config.yaml` reads the same data from any directory."""
    used = runtime.data_dir(cfg.data.data_dir)
    if used is None:  # Keras's download: nothing to pin
        return cfg
    data = cfg.data.model_copy(update={"data_dir": os.path.abspath(used)})
    return cfg.model_copy(update={"data": data})


def run_fingerprint(config_text: str, data_sha256: str, data_source: str, planned: tuple | None,
                    init_from: dict | None) -> dict[str, Any]:
    """fingerprint.json of a new run: its config.yaml's text, its data, the budget its config file planned
    (`RunConfig.planned_training`), and the run whose weights it started from (`resume.check_init_from`)."""
    return {"config_sha256": sha256_text(config_text), "data_sha256": data_sha256, "data_source": data_source,
            "planned_training": planned, "format": RUN_FORMAT, "made_by": made_by(),
            "init_from": {key: init_from[key] for key in ("run", "model_sha256")} if init_from else None}
