"""What `mnist train` shows while it trains: a live bar within each epoch (terminals only) and a table of epochs.

The bar is `rich`'s: Keras 3 itself depends on rich, so it costs no new package, users know it, it fits the bar
to the terminal's width, and it prints messages above a live bar instead of gluing them to it. rich is imported
only when a bar is drawn.
"""

from __future__ import annotations

import time

import click

# One line per epoch, in columns under a header printed once: at most 61 characters for 100/100 epochs and
# 9999.9 s, so it never wraps in an 80-column terminal.
HEADER = f"{'epoch':>7}  {'loss':>7} {'acc':>7}  {'val_loss':>8} {'val_acc':>7}  {'lr':>7}  {'time':>7}"


def epoch_line(record, epochs: int) -> str:
    return (f"{f'{record.epoch}/{epochs}':>7}  {record.loss:7.4f} {record.accuracy:7.4f}  {record.val_loss:8.4f} "
            f"{record.val_accuracy:7.4f}  {record.learning_rate:7.1e}  {record.seconds:6.1f}s")


class TrainingProgress:
    """Receives the run's events (see `pipeline.Events`) and prints them.

    `bar`: draw the live bar (a terminal); `quiet`: print no bar, no epochs and no log lines, only warnings;
    the caller prints the result.
    `batch_size` turns steps into images for the rate.
    """

    REDRAW_SECONDS = 0.1  # reading the running metrics waits for the device: not after every step

    def __init__(self, bar: bool, quiet: bool = False, batch_size: int = 1):
        self.bar_enabled = bar and not quiet
        self.quiet = quiet
        self.batch_size = batch_size
        self.header_printed = False
        self._bar = None  # rich.progress.Progress while an epoch is drawn
        self._task = None
        self._last_draw = 0.0

    # -- events -----------------------------------------------------------------------------------------------
    def log(self, message: str) -> None:
        if not self.quiet:
            self._print(message)

    def warn(self, message: str) -> None:
        self._print(message)  # --quiet too

    def step(self, where) -> None:
        """`where`: a trainer.StepProgress, after each group of steps."""
        if not self.bar_enabled:
            return
        now = time.monotonic()
        if self._bar is not None and now - self._last_draw < self.REDRAW_SECONDS and where.step != where.steps:
            return
        self._last_draw = now
        loss, accuracy = where.running()
        seconds = max(where.seconds, 1e-9)
        remaining = seconds / where.step * (where.steps - where.step)
        fields = dict(completed=where.step, loss=loss, acc=accuracy, rate=where.step * self.batch_size / seconds,
                      time=f"{_clock(seconds)} < {_clock(remaining)}")
        if self._bar is None:
            self._start_bar(where, fields)  # drawn first with numbers, not with placeholders
        else:
            self._bar.update(self._task, **fields)

    def epoch_done(self, record, epochs: int) -> None:
        self.clear()
        if self.quiet:
            return
        if not self.header_printed:
            click.echo(HEADER)
            self.header_printed = True
        click.echo(epoch_line(record, epochs))

    def clear(self) -> None:
        """Remove the bar (if drawn), so that whatever is printed next starts on a clean line of its own."""
        if self._bar is not None:
            self._bar.stop()  # transient: the bar's line is erased and the cursor shown again
            self._bar = None

    # -- drawing ----------------------------------------------------------------------------------------------
    def _print(self, message: str) -> None:
        if self._bar is not None:
            self._bar.console.print(message, markup=False, highlight=False, soft_wrap=True)  # above the bar
        else:
            click.echo(message)

    def _start_bar(self, where, fields: dict) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._bar = Progress(
            TextColumn(f"epoch {where.epoch}/{where.epochs}"), BarColumn(bar_width=None), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f} acc {task.fields[acc]:.4f}"),
            TextColumn("{task.fields[rate]:,.0f} img/s"), TextColumn("{task.fields[time]}"),
            transient=True, redirect_stdout=False, redirect_stderr=False)
        self._task = self._bar.add_task("", total=where.steps, **fields)
        self._bar.start()


def _clock(seconds: float) -> str:
    """Elapsed or remaining time as m:ss (h:mm:ss from an hour)."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
