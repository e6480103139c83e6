"""The shape of an MNIST-style example, named once: every module that needs it imports it from here.

A leaf: imports nothing, so config, data, models and reports can all use it.
"""

IMAGE_SIZE = 28  # pixels per side
IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)  # (height, width, channels) of one model input
PIXELS = IMAGE_SIZE * IMAGE_SIZE  # 784
NUM_CLASSES = 10  # digits 0-9, or Fashion-MNIST's ten kinds of clothing
