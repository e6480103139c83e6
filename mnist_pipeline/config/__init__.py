"""Typed, frozen run configuration: schema defaults < YAML file < `--set a.b=v` < dedicated flags.

Owns validation and the one-line messages for bad configs. Imports neither TensorFlow nor click.
`schema` holds the run's sections and `model_params` each model's parameters (over the shared types in `fields`);
`loading` reads and validates a config (YAML through `yaml_reading`, errors worded by `problems`, sizes checked
by `footprint`); `docs` describes the fields.
"""

from mnist_pipeline.config.docs import describe_fields, describe_model_params, flat_values, yaml_value
from mnist_pipeline.config.loading import load_config, parse_override, to_yaml
from mnist_pipeline.config.model_params import MODEL_PARAMS, CNNParams, DeepMLPParams, MLPParams
from mnist_pipeline.config.schema import CLASS_NAMES, DataConfig, ModelConfig, OutputConfig, RunConfig, TrainingConfig

__all__ = [
    "CLASS_NAMES", "MODEL_PARAMS", "CNNParams", "DataConfig", "DeepMLPParams", "MLPParams", "ModelConfig",
    "OutputConfig", "RunConfig", "TrainingConfig", "describe_fields", "describe_model_params", "flat_values",
    "load_config", "parse_override", "to_yaml", "yaml_value",
]
