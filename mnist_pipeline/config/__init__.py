"""Typed, frozen run configuration: schema defaults < YAML file < `--set a.b=v` < dedicated flags.

Owns validation and the one-line messages for bad configs. Imports neither TensorFlow nor click.
`schema` holds the models, `loading` reads and validates files, `docs` describes the fields.
"""

from mnist_pipeline.config.docs import describe_fields, describe_model_params, flat_values, yaml_value
from mnist_pipeline.config.loading import load_config, parse_override, to_yaml
from mnist_pipeline.config.schema import (
    CLASS_NAMES,
    MODEL_PARAMS,
    CNNParams,
    DataConfig,
    DeepMLPParams,
    MLPParams,
    ModelConfig,
    OutputConfig,
    RunConfig,
    TrainingConfig,
)

__all__ = [
    "CLASS_NAMES", "MODEL_PARAMS", "CNNParams", "DataConfig", "DeepMLPParams", "MLPParams", "ModelConfig",
    "OutputConfig", "RunConfig", "TrainingConfig", "describe_fields", "describe_model_params", "flat_values",
    "load_config", "parse_override", "to_yaml", "yaml_value",
]
