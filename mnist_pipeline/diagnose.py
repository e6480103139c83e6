"""`mnist diagnose gradients`: each layer's gradient norm, step by step, over a short plain training run.

A diagnostic, not a trainer: one device, no augmentation, no XLA; each step is the trainer's learning step
written out with a tf.GradientTape (`learning_step_norms`), so the norms are those of the gradients applied.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mnist_pipeline.config import RunConfig
from mnist_pipeline.errors import TrainingDiverged
from mnist_pipeline.startup import start_runtime
from mnist_pipeline.training_setup import build_model_and_trainer, load_data


def learning_step_norms(model, optimizer, images, labels, global_batch_size: int, label_smoothing: float = 0.0):
    """One learning step on (images, labels), the loss as `Trainer` computes it; each trainable variable's
    gradient norm, in `model.trainable_variables` order."""
    import tensorflow as tf

    from mnist_pipeline.evaluation import per_example_loss_fn, smoothed_cross_entropy

    with tf.GradientTape() as tape:
        logits = model(images, training=True)
        objective = (smoothed_cross_entropy(labels, logits, label_smoothing) if label_smoothing
                     else per_example_loss_fn()(labels, logits))
        loss = tf.nn.compute_average_loss(objective, global_batch_size=global_batch_size)
        if model.losses:  # L1/L2 weight penalties
            loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        scaled_loss = optimizer.scale_loss(loss)  # the identity unless mixed precision scales losses
    gradients = tape.gradient(scaled_loss, model.trainable_variables)
    optimizer.apply(gradients, model.trainable_variables)
    return [tf.norm(g) for g in gradients]


def diagnose_gradients(cfg: RunConfig, steps: int) -> dict[str, Any]:
    """Train `steps` steps (no augmentation) and record the gradient norm of every layer's kernel per step.

    Returns {"layers": names from input to logits, "norms": [[norm per layer] per step], "mean": [per layer],
    "diverged_at_step": the first step whose gradients were NaN or infinite (not recorded, and the last one
    tried), or None}. Exploding gradients are a finding too, so only all steps failing is an error.
    """
    import tensorflow as tf

    from mnist_pipeline.data.datasets import PipelinedBatches

    start_runtime(cfg, distributed=False)  # per-step gradient norms of one model: one device
    _, splits = load_data(cfg)
    model, trainer = build_model_and_trainer(cfg)  # its optimizer: loss scaling included under float16

    @tf.function
    def step(images, labels):
        return learning_step_norms(model, trainer.optimizer, images, labels, cfg.training.batch_size,
                                   cfg.training.label_smoothing)

    kernels = [i for i, v in enumerate(model.trainable_variables) if v.path.endswith("kernel")]
    batches = PipelinedBatches(splits.x_train, splits.y_train, cfg.training.batch_size, cfg.training.seed,
                               normalization=splits.normalization)
    norms: list[list[float]] = []
    diverged_at = None
    epoch = 0
    while len(norms) < steps and diverged_at is None:
        for images, labels in batches.epoch(epoch):
            gradient_norms = step(images, labels)
            step_norms = [float(gradient_norms[i]) for i in kernels]
            if not np.all(np.isfinite(step_norms)):
                diverged_at = len(norms) + 1
                break
            norms.append(step_norms)
            if len(norms) == steps:
                break
        epoch += 1
    if not norms:
        raise TrainingDiverged(f"the gradients were NaN or infinite from the first step; lower "
                               f"training.learning_rate (now {cfg.training.learning_rate:g}) or check the data")
    return {"layers": [model.trainable_variables[i].path.split("/")[-2] for i in kernels], "norms": norms,
            "mean": np.mean(norms, axis=0).tolist(), "diverged_at_step": diverged_at}
