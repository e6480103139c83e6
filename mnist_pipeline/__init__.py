"""mnist-pipeline: train, evaluate and compare MNIST classifiers from YAML configs.

Importing this package must stay cheap: nothing here imports TensorFlow.
"""

__version__ = "0.1.0"
