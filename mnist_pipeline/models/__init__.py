"""The model classes and their registry (`mnist_pipeline.models.registry`).

Importing this package registers the classes with Keras, so that a run's model.keras loads in plain Keras:
`import mnist_pipeline.models; keras.models.load_model("model.keras")`. It imports Keras (every submodule
does); the CLI imports it only in the commands that load or build models.
"""

from mnist_pipeline.models.cnn import CNN
from mnist_pipeline.models.mlp import MLP, DeepMLP

__all__ = ["CNN", "MLP", "DeepMLP"]
