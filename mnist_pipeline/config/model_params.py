"""Each registry model's parameters (`model.params`): names, types, ranges and defaults, declared once here.

They live in config (not in `models`) so that configs validate without TensorFlow. Each model class takes
exactly these fields as keyword arguments; `constructor_mismatches` is the one check of that (names and
defaults), run by tests/test_models.py.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Literal

from pydantic import Field, StrictBool, StrictInt, model_validator
from pydantic_core import PydanticUndefined

from mnist_pipeline.config.fields import Activation, Filters, Fraction, Initializer, Penalty, Section, Width
from mnist_pipeline.errors import plural
from mnist_pipeline.shapes import IMAGE_SIZE


class _DenseKnobs(Section):
    activation: Activation = Field("relu", description="hidden-layer activation")
    dropout_rate: Fraction = Field(0.0, description="dropout after each hidden layer (0 = off)")
    batch_norm: StrictBool = Field(False, description="batch normalization before each activation")
    l1: Penalty = Field(0.0, description="L1 weight penalty on hidden and output kernels")
    l2: Penalty = Field(0.0, description="L2 weight penalty on hidden and output kernels")
    kernel_initializer: Initializer = Field("glorot_uniform", description="initializer of every kernel")


class LinearParams(Section):
    """Flatten -> 10 logits (softmax regression): one weight template per class, no hidden layer."""

    l1: Penalty = Field(0.0, description="L1 weight penalty on the kernel")
    l2: Penalty = Field(0.0, description="L2 weight penalty on the kernel")
    # The loss is convex: there is no symmetry for random weights to break, and templates grown from zeros
    # show only what the data put there.
    kernel_initializer: Initializer = Field("zeros", description="initializer of the kernel")


class MLPParams(_DenseKnobs):
    """Flatten -> one hidden Dense -> 10 logits."""

    units: Width = Field(128, description="hidden units")


class DeepMLPParams(_DenseKnobs):
    """Flatten -> several hidden Dense layers -> 10 logits."""

    units: tuple[Width, ...] = Field((512, 256, 128), min_length=1, max_length=32,
                                     description="hidden units per layer")
    dropout_rate: Fraction = Field(0.2, description="dropout after each hidden layer (0 = off)")


class CNNParams(_DenseKnobs):
    """Conv blocks (conv x N, pool, dropout) -> Dense head -> 10 logits."""

    filters: tuple[Filters, ...] = Field((32, 64), min_length=1, max_length=4, description="filters per block")
    convs_per_block: Annotated[StrictInt, Field(ge=1, le=4)] | tuple[Annotated[StrictInt, Field(ge=1, le=4)], ...] = (
        Field(2, description="conv layers before each 2x2 max-pool: one number for all blocks, or one per block"))
    # Its own bounds: a Field(le=7) stacked on Width's le=16384 was dropped by pydantic for the latter.
    kernel_size: Annotated[StrictInt, Field(ge=1, le=7)] = Field(3, description="square conv kernel size")
    padding: Literal["same", "valid"] = Field(
        "same", description="'same' keeps each conv's height and width; 'valid' trims kernel_size - 1 pixels "
                            "(fewer FLOPs, as in the Keras example CNN)")
    dense_units: Annotated[StrictInt, Field(ge=0, le=16_384)] = Field(
        128, description="units of the hidden Dense layer before the logits (0 = none: flatten to the logits)")
    dropout_rate: Fraction = Field(0.25, description="dropout after each conv block")
    dense_dropout_rate: Fraction = Field(0.5, description="dropout before the logits")

    @model_validator(mode="after")
    def _one_count_per_block(self):
        if isinstance(self.convs_per_block, tuple) and len(self.convs_per_block) != len(self.filters):
            raise ValueError(f"convs_per_block lists {plural(len(self.convs_per_block), 'count')} for "
                             f"{plural(len(self.filters), 'block')} (filters); give one per block, or a single number")
        return self

    @model_validator(mode="after")
    def _image_outlasts_the_blocks(self):
        counts = ((self.convs_per_block,) * len(self.filters) if isinstance(self.convs_per_block, int)
                  else self.convs_per_block)
        size = IMAGE_SIZE
        for block, convs in enumerate(counts, start=1):
            size -= convs * (self.kernel_size - 1) if self.padding == "valid" else 0
            if size < 2:  # the 2x2 pool needs at least 2x2
                raise ValueError(f"a {IMAGE_SIZE}x{IMAGE_SIZE} image shrinks to {max(size, 0)}x{max(size, 0)} before "
                                 f"pooling in block {block} with padding 'valid'; use padding 'same', fewer blocks or "
                                 f"convs, or a smaller kernel_size")
            size //= 2
        return self


MODEL_PARAMS: dict[str, type[Section]] = {"linear": LinearParams, "mlp": MLPParams, "deep_mlp": DeepMLPParams,
                                           "cnn": CNNParams}


def constructor_mismatches(model_class: type, params: type[Section]) -> list[str]:
    """How `model_class`'s constructor departs from its parameter schema, one line each (empty: it agrees).

    The constructor's keyword-only arguments must be exactly the schema's fields, and any default it gives
    one must equal the schema's: the schema is where a default is declared, so a constructor best has none.
    """
    keywords = {p.name: p for p in inspect.signature(model_class.__init__).parameters.values()
                if p.kind is p.KEYWORD_ONLY}
    fields = params.model_fields
    problems = [f"{name}: a constructor argument the schema lacks" for name in keywords if name not in fields]
    problems += [f"{name}: a schema field the constructor lacks" for name in fields if name not in keywords]
    for name in keywords.keys() & fields.keys():
        default = keywords[name].default
        declared = fields[name].get_default(call_default_factory=True)
        if default is not inspect.Parameter.empty and declared is not PydanticUndefined and default != declared:
            problems.append(f"{name}: the constructor's default {default!r} differs from the schema's {declared!r}")
    return sorted(problems)
