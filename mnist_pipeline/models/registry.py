"""The model registry: registry name -> model class, and `build_model`. Names match `configs/<name>.yaml`."""

from __future__ import annotations

import numpy as np
from pydantic import ValidationError

from mnist_pipeline.config import MODEL_PARAMS
from mnist_pipeline.errors import ConfigError
from mnist_pipeline.models.cnn import CNN
from mnist_pipeline.models.mlp import MLP, DeepMLP, Linear
from mnist_pipeline.shapes import IMAGE_SHAPE

MODELS = {"linear": Linear, "mlp": MLP, "deep_mlp": DeepMLP, "cnn": CNN}


def build_model(name: str, **params):
    """A built model (weights created) of registry `name`; missing `params` take the schema's defaults."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    try:
        hyperparameters = MODEL_PARAMS[name].model_validate(params).model_dump()
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"model {name!r}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    model = MODELS[name](**hyperparameters)
    # model.build() does not create a subclassed model's sublayer weights in Keras 3 (keras#19229): call it.
    model(np.zeros((1, *IMAGE_SHAPE), dtype="float32"), training=False)
    return model
