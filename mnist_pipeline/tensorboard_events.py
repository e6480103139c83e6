"""TensorBoard event files of a run, written from plain numbers between steps (never inside a compiled step).

Names follow Keras's own TensorBoard callback, so a board shows our runs and `model.fit` runs alike:
`<run>/tensorboard/train` holds `epoch_loss`, `epoch_accuracy`, `epoch_learning_rate` (step = 0-based epoch),
`batch_loss` (step = 1-based global step) and weight histograms `<variable path>/histogram`;
`<run>/tensorboard/validation` holds `epoch_loss` and `epoch_accuracy`. Ours alone: `<run>/tensorboard/test`
holds the test `epoch_loss` and `epoch_accuracy` once, at the step of the epoch whose weights were tested, and
the report's figures as images. Imports TensorFlow: the pipeline imports it only while training.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import tensorflow as tf

from mnist_pipeline.errors import brief

TENSORBOARD = "tensorboard"  # the folder inside a run folder


class TensorBoardEvents:
    """The event writers of one run folder. Per-step losses are kept in memory and written once per epoch:
    one batch of small eager writes between epochs instead of a write after every group of steps.

    Events are a view of the run, never a reason for it to fail: the first write that fails (a full disk, a
    folder it may not write) stops the events with one `log` line, and training goes on (a full disk then
    stops the run where its own files are written, with their error)."""

    def __init__(self, run_dir: Path, loss_every_steps: int, histograms_every_epochs: int,
                 log: Callable[[str], None] = lambda line: None):
        # A resumed run appends event files, which TensorBoard reads in name order, i.e. by creation second.
        # Only finished epochs are written (after their checkpoint), so no step is ever written twice.
        self.root = run_dir / TENSORBOARD
        self.writers: dict[str, Any] = {}  # phase -> tf.summary writer, made when first written to
        self.loss_every_steps = loss_every_steps
        self.histograms_every_epochs = histograms_every_epochs
        self.pending: list[tuple[int, float]] = []  # (global step, loss) not yet written
        self.log = log
        self.failed: str | None = None  # why the events stopped

    def step_losses(self, first_step: int, losses: list[float]) -> None:
        """The losses of global steps `first_step`, `first_step + 1`, ... (1-based); keeps every N-th."""
        if self.loss_every_steps:
            self.pending += [(first_step + i, loss) for i, loss in enumerate(losses)
                             if (first_step + i) % self.loss_every_steps == 0]

    def writer(self, phase: str):
        if phase not in self.writers:
            for folder in (self.root, self.root / phase):  # TensorFlow's own message names a C++ function
                if folder.exists() and not folder.is_dir():
                    raise NotADirectoryError(f"{folder} is a file, not a folder; move it away for events on the "
                                             f"next run or resume")
            self.writers[phase] = tf.summary.create_file_writer(str(self.root / phase))
        return self.writers[phase]

    def _safely(self, action: Callable[[], None]) -> None:
        if self.failed is not None:
            return
        try:
            action()
        except Exception as exc:  # tf.errors.OpError (e.g. ResourceExhaustedError on a full disk), OSError
            self.failed = str(exc) if isinstance(exc, NotADirectoryError) else f"{type(exc).__name__}: {brief(exc)}"
            self.pending.clear()
            self.log(f"warning: TensorBoard events stopped ({self.failed}); training goes on without them")

    def epoch(self, record, model) -> None:
        """One `EpochRecord`'s values (and the weights' histograms when due), then everything to disk."""
        self._safely(lambda: self._epoch(record, model))

    def _epoch(self, record, model) -> None:
        step = record.epoch - 1  # Keras's callback counts epochs from 0
        with self.writer("train").as_default():
            self._write_pending()
            tf.summary.scalar("epoch_loss", record.loss, step=step)
            tf.summary.scalar("epoch_accuracy", record.accuracy, step=step)
            tf.summary.scalar("epoch_learning_rate", record.learning_rate, step=step)
            if self.histograms_every_epochs and step % self.histograms_every_epochs == 0:
                for variable in model.weights:  # as Keras: every weight, under its path
                    tf.summary.histogram(f"{variable.path.replace(':', '_')}/histogram", variable, step=step)
        with self.writer("validation").as_default():
            tf.summary.scalar("epoch_loss", record.val_loss, step=step)
            tf.summary.scalar("epoch_accuracy", record.val_accuracy, step=step)
        self.flush()

    def test(self, loss: float, accuracy: float, best_epoch: int) -> None:
        self._safely(lambda: self._test(loss, accuracy, best_epoch))

    def _test(self, loss: float, accuracy: float, best_epoch: int) -> None:
        with self.writer("test").as_default():
            tf.summary.scalar("epoch_loss", loss, step=best_epoch - 1)
            tf.summary.scalar("epoch_accuracy", accuracy, step=best_epoch - 1)
        self.flush()

    def figures(self, figures: dict[str, tuple[str, Path]], step: int) -> None:
        """PNG figures of the report as images: {tag: (phase, file)}; a missing file is skipped."""
        self._safely(lambda: self._figures(figures, step))

    def _figures(self, figures: dict[str, tuple[str, Path]], step: int) -> None:
        for tag, (phase, path) in figures.items():
            if path.is_file():
                image = tf.io.decode_png(path.read_bytes(), channels=3)
                with self.writer(phase).as_default():
                    tf.summary.image(tag, image[None], step=step)
        self.flush()

    def _write_pending(self) -> None:
        for step, loss in self.pending:
            tf.summary.scalar("batch_loss", loss, step=step)
        self.pending.clear()

    def flush(self) -> None:
        for writer in self.writers.values():
            writer.flush()

    def close(self) -> None:
        """Close the files. The steps of an epoch that did not finish are dropped, as history.csv drops them:
        a resumed run trains them again, and TensorBoard would draw both values of a step written twice."""
        self.pending.clear()

        def close_all() -> None:
            for writer in self.writers.values():
                writer.close()

        self._safely(close_all)
