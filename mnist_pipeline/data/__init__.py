"""Data: read IDX/npz/Keras sources (`sources`, `idx`) -> normalize and split (`prepare`) -> tf.data (`datasets`).

Only `datasets` imports TensorFlow; the rest is NumPy so tests and tools stay fast.
"""
