"""One device vs MirroredStrategy over 2 logical CPU devices, our trainer, processes taking turns."""

from __future__ import annotations

import statistics

from benchmarks.processes import rates, spread
from benchmarks.train_worker import under_settings


def replicas(model: str, args) -> dict:
    """One device vs MirroredStrategy over 2 logical CPU devices (under the strategy XLA is off and batches
    come from tf.data per replica)."""
    measured = {name: rates(results) for name, results in under_settings(model, {"1": (1, []), "2": (2, [])},
                                                                       args).items()}
    one, two = statistics.median(measured["1"]), statistics.median(measured["2"])
    return {"model": model, "1 replica img/s": round(one), "2 replicas img/s": round(two),
            "2 / 1": round(two / one, 2), "spread 1": spread(measured["1"]), "spread 2": spread(measured["2"])}
