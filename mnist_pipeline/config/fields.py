"""The field types every config section shares: numbers as YAML writes them, bounded widths and rates, the
activation and initializer names, and the frozen, closed base of every section. No TensorFlow here."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt

from mnist_pipeline.errors import quote


def _number(value: Any) -> Any:
    # PyYAML reads `1e-3` (no dot) as a string; accept any numeric string, but not booleans, NaN or infinity
    # (a rate or penalty of inf would only be found out as a NaN loss halfway through training).
    if isinstance(value, bool):
        raise ValueError("expected a number, not true or false")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(f"expected a number, got the string {quote(value)}") from None
    if isinstance(value, (int, float)):
        try:
            value = float(value)
        except OverflowError:
            raise ValueError("the number is too large") from None
        if not math.isfinite(value):
            raise ValueError("expected a finite number, got NaN or infinity")
    return value


Number = Annotated[float, BeforeValidator(_number)]
Fraction = Annotated[Number, Field(ge=0.0, lt=1.0)]
Penalty = Annotated[Number, Field(ge=0.0, le=10.0)]
# Widths far past what 28x28 digits use; `training_memory` bounds their combination with the batch size.
Width = Annotated[StrictInt, Field(ge=1, le=16_384)]
Filters = Annotated[StrictInt, Field(ge=1, le=2_048)]

Activation = Literal["relu", "elu", "gelu", "selu", "swish", "leaky_relu", "sigmoid", "tanh", "linear"]
Initializer = Literal[
    "glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_uniform", "lecun_normal",
    "random_normal", "random_uniform", "zeros",
]


class Section(BaseModel):
    """A config section: unknown keys are errors, and a loaded config cannot change."""

    model_config = ConfigDict(extra="forbid", frozen=True)
