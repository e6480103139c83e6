"""A run's config made into what it trains with: its data splits, model, trainer, batches and epoch policies.

`mnist train`, `mnist diagnose` and benchmarks/race.py build from here, so they train the same things.
Imports TensorFlow only inside the functions that build models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mnist_pipeline import hardware, runtime
from mnist_pipeline.config import RunConfig
from mnist_pipeline.data.prepare import Splits, prepare_splits
from mnist_pipeline.data.sources import load_raw
from mnist_pipeline.errors import ConfigError


def load_data(cfg: RunConfig):
    """(the raw data as read, its splits as the config asks for them); refuses a batch larger than the
    training split."""
    raw = load_raw(cfg.data.dataset, runtime.data_dir(cfg.data.data_dir))
    splits = prepare_splits(raw, validation_split=cfg.data.validation_split, subset=cfg.data.subset,
                            normalization=cfg.data.normalization, seed=cfg.training.seed)
    if splits.sizes["train"] < cfg.training.batch_size:
        more = " or raise data.subset" if cfg.data.subset else ""
        raise ConfigError(f"training.batch_size = {cfg.training.batch_size} is larger than the "
                          f"{splits.sizes['train']} training examples; lower the batch size{more}")
    return raw, splits


def build_model_and_trainer(cfg: RunConfig, strategy=None, jit_compile: bool = False):
    """(model, trainer), created in the strategy's scope: their variables are then mirrored on its replicas.
    `jit_compile`: the resolved `training.jit_compile` (see `hardware.resolve_jit_compile`)."""
    import tensorflow as tf

    from mnist_pipeline.models.registry import build_model
    from mnist_pipeline.trainer import Trainer, make_optimizer

    training = cfg.training
    with (strategy or tf.distribute.get_strategy()).scope():
        model = build_model(cfg.model.name, **cfg.model.params)
        optimizer = make_optimizer(training.optimizer, training.learning_rate, training.momentum,
                                   training.weight_decay, training.ema)
        trainer = Trainer(model, optimizer, global_batch_size=training.batch_size,
                          jit_compile=jit_compile, steps_per_execution=training.steps_per_execution,
                          label_smoothing=training.label_smoothing,
                          test_time_flip=cfg.data.augmentation.test_time_flip, strategy=strategy)
    return model, trainer


@dataclass
class TrainingSetup:
    """What one training run works with, wired from its config (TensorFlow objects, hence `Any`)."""

    model: Any
    trainer: Any
    augmentation: Any  # data.augment.Augmentation or None
    batches: Any  # data.datasets.BatchSource
    val_data: Any  # tf.data.Dataset
    schedule: Any
    early_stopping: Any  # None when off
    statistics_data: Any  # tf.data.Dataset of training images for precise batch norm, or None
    jit_wanted: bool  # training.jit_compile, resolved; the trainer turns XLA off under a strategy
    jit_reason: str  # why it is on or off


def build_training(cfg: RunConfig, splits: Splits, strategy=None, device: hardware.Device | None = None
                   ) -> TrainingSetup:
    """The model, trainer, training batches, validation data and epoch policies, as `mnist train` uses them
    (benchmarks/race.py too). Call after `startup.start_runtime`, with its strategy and device (asked of
    TensorFlow when not given)."""
    from mnist_pipeline.data.augment import Augmentation
    from mnist_pipeline.data.datasets import evaluation_batches, statistics_batches, training_batches

    training = cfg.training
    steps = training.epochs * (splits.sizes["train"] // training.batch_size)
    jit_compile, jit_reason = hardware.resolve_jit_compile(training.jit_compile, cfg.model.name, cfg.model.params,
                                                           steps)
    model, trainer = build_model_and_trainer(cfg, strategy, jit_compile)
    augmentation = Augmentation.from_config(cfg.data.augmentation, fill_value=splits.normalization.background)
    gpu = device.is_gpu if device is not None else runtime.using_gpu()
    batches = training_batches(splits.x_train, splits.y_train, training.batch_size, training.seed, augmentation,
                               jit_compile=trainer.jit_compile, gpu=gpu, strategy=strategy,
                               normalization=splits.normalization)
    val_data = evaluation_batches(splits.x_val, splits.y_val, training.batch_size, strategy, splits.normalization)
    schedule, early_stopping = epoch_policies(cfg)
    statistics_data = statistics_batches(splits.x_train, training.batch_size, training.precise_batch_norm,
                                         training.seed, splits.normalization)
    return TrainingSetup(model, trainer, augmentation, batches, val_data, schedule, early_stopping, statistics_data,
                         jit_compile, jit_reason)


def epoch_policies(cfg: RunConfig):
    """The learning-rate schedule and early stopping the config asks for (early stopping may be None)."""
    from mnist_pipeline.schedules import EarlyStopping, LearningRateSchedule

    training = cfg.training
    schedule = LearningRateSchedule(training.schedule.name, training.learning_rate, training.epochs,
                                    step_size=training.schedule.step_size, factor=training.schedule.factor,
                                    patience=training.schedule.patience,
                                    min_learning_rate=training.schedule.min_learning_rate,
                                    warmup_epochs=training.schedule.warmup_epochs)
    stopping = training.early_stopping
    early_stopping = (EarlyStopping(stopping.monitor, stopping.patience, stopping.min_delta)
                      if stopping.enabled else None)
    return schedule, early_stopping
