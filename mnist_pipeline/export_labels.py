"""The facts every exported file carries (METADATA_KEY), written into it the way its format keeps metadata: ONNX
metadata properties, a TFLite metadata buffer, a SavedModel `metadata` signature."""

from __future__ import annotations

import math
from pathlib import Path

from mnist_pipeline.shapes import IMAGE_SIZE, NUM_CLASSES

METADATA_KEY = "mnist_pipeline"
INPUT_NAME, OUTPUT_NAME = "pixels", "probabilities"


def label(fmt: str, path: Path, metadata: dict) -> None:
    """Add `metadata` to the LiteRT or ONNX file at `path`."""
    (_label_onnx if fmt == "onnx" else _label_tflite)(path, metadata)


def metadata(run, unit_floats: bool = True) -> dict:
    """What a program using the file needs to know, in every format."""
    from mnist_pipeline.config import CLASS_NAMES

    return {"input": INPUT_NAME, "input_shape": ["batch", IMAGE_SIZE, IMAGE_SIZE], "input_dtype": "float32",
            "input_range": "pixel values 0-255, light on dark as in the dataset " + (
                "(an image with every pixel at 1 or less is taken as 0-1 and scaled)" if unit_floats else
                "(only 0-255: this int8 model does not take 0-1 floats)"),
            "output": OUTPUT_NAME, "output_shape": ["batch", NUM_CLASSES],
            "class_names": CLASS_NAMES[run.config.data.dataset],
            "dataset": run.config.data.dataset, "run": run.run_dir.name, "model": run.config.model.name,
            "test_accuracy": finite(run.metrics.get("test_accuracy")),
            "preprocessing": "mnist predict's recipe for the dataset (docs/guide/predict-export.md, \"Predict\")"}


def finite(value):
    """A recorded number, or None where it is NaN or infinite (the metadata is strict JSON)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_saved_model(serving, path: Path, metadata: dict, signature) -> None:
    """The SavedModel with a `serving_default` signature (pixels -> probabilities) and a `metadata` one that
    returns the metadata as a JSON string."""
    import json

    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(serving)
    archive.add_endpoint("serve", serving.call, input_signature=signature)
    text = json.dumps(metadata, allow_nan=False)
    archive.add_endpoint("metadata", tf.function(lambda: {METADATA_KEY: tf.constant(text)}), input_signature=[])
    archive.write_out(str(path), verbose=False)


def _label_onnx(path: Path, metadata: dict) -> None:
    """Name the ONNX graph's output `probabilities` (tf2onnx calls it after a TensorFlow node) and add the
    metadata as properties, which onnxruntime reads back (`get_modelmeta().custom_metadata_map`)."""
    import json

    import onnx

    model = onnx.load(str(path))
    old = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [OUTPUT_NAME if name == old else name for name in node.output]
        node.input[:] = [OUTPUT_NAME if name == old else name for name in node.input]
    model.graph.output[0].name = OUTPUT_NAME
    for value in (model.graph.input[0], model.graph.output[0]):  # tf2onnx names the batch axis "unk__N"
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(metadata, allow_nan=False),
                                        "class_names": json.dumps(metadata["class_names"], allow_nan=False),
                                        "input_range": metadata["input_range"]})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _label_tflite(path: Path, metadata: dict) -> None:
    """Add the metadata as a named buffer of the TFLite flatbuffer (the format's place for it)."""
    import json

    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    buffer = schema.BufferT()
    buffer.data = list(json.dumps(metadata, allow_nan=False).encode())
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_KEY, len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    flatbuffer_utils.write_model(model, str(path))
