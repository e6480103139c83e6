"""A model's size counted from its parameters, without building it (no TensorFlow): its parameter and
activation counts, and the memory a training step needs, so that a config too large to train is refused."""

from __future__ import annotations

from typing import Any

from mnist_pipeline.shapes import IMAGE_SIZE, NUM_CLASSES, PIXELS

MAX_TRAINING_BYTES = 16 << 30  # refused above this estimate: more than this machine class (24 GiB) can hold


def model_size(name: str, params: dict[str, Any]) -> tuple[int, int]:
    """(parameters, activation values per example) of a registry model, counted from its parameters.

    Parameters match Keras's count_params (tests/test_models.py checks every shipped config); activations
    count each layer's output once, a lower bound of what training keeps per example.
    """
    batch_norm = params.get("batch_norm", False)

    def dense(inputs: int, units: int) -> tuple[int, int]:  # kernel + (bias, or BN's 4 vectors), outputs
        return inputs * units + (4 * units if batch_norm else units), units * (3 if batch_norm else 2)

    if name in ("linear", "mlp", "deep_mlp"):  # linear: no hidden widths, the pixels straight to the logits
        units = params.get("units", ())
        widths = [units] if isinstance(units, int) else list(units)
        sizes = [dense(a, b) for a, b in zip([PIXELS, *widths], widths, strict=False)]
        parameters, activations = sum(p for p, _ in sizes), PIXELS + sum(a for _, a in sizes)
        return (parameters + [PIXELS, *widths][-1] * NUM_CLASSES + NUM_CLASSES,
                activations + NUM_CLASSES)
    counts = params["convs_per_block"]
    counts = [counts] * len(params["filters"]) if isinstance(counts, int) else list(counts)
    side, channels, parameters, activations = IMAGE_SIZE, 1, 0, PIXELS
    for filters, convs in zip(params["filters"], counts, strict=True):
        for _ in range(convs):
            side -= params["kernel_size"] - 1 if params["padding"] == "valid" else 0
            parameters += params["kernel_size"] ** 2 * channels * filters + (4 if batch_norm else 1) * filters
            activations += side * side * filters * (3 if batch_norm else 2)
            channels = filters
        side //= 2
        activations += side * side * channels
    flat = side * side * channels
    if params["dense_units"]:
        p, a = dense(flat, params["dense_units"])
        parameters, activations, flat = parameters + p, activations + a, params["dense_units"]
    return parameters + flat * NUM_CLASSES + NUM_CLASSES, activations + NUM_CLASSES


def training_memory(name: str, params: dict[str, Any], batch_size: int) -> int:
    """Bytes a float32 training step needs at least: weights, gradients and two Adam slots, and every
    activation and its gradient for the batch."""
    parameters, activations = model_size(name, params)
    return 4 * (4 * parameters + 2 * batch_size * activations)
