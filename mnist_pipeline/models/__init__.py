"""The model classes and their registry (`mnist_pipeline.models.registry`).

This package file stays empty so that importing a submodule costs nothing until Keras is really needed.
"""
