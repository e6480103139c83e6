"""`mnist train`: one run from a config (or `--resume` of an interrupted one), with progress and signals."""

from __future__ import annotations

import os
import sys

import click

from mnist_pipeline.cli.progress import TrainingProgress
from mnist_pipeline.errors import ConfigError, Interrupted


@click.command(short_help="Train a model from a config, or resume a run.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="YAML run config (default: built-in defaults, an MLP).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override one config value (YAML scalar or [list]); repeatable.")
@click.option("--data-dir", type=str, metavar="DIR",
              help="Folder with IDX or .npz files (default: data.data_dir, then $MNIST_DATA_DIR, then download).")
@click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), help="Where to train (default: auto).")
@click.option("--seed", type=int, help="Seed for Python, NumPy, TensorFlow and the data split.")
@click.option("--epochs", type=int, help="Number of epochs (same as --set training.epochs=N).")
@click.option("--output-dir", type=str, metavar="DIR", help="Where runs/ goes (default: outputs).")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), metavar="RUN_DIR",
              help="Continue a stopped run in its own folder from its last checkpoint; with more --epochs, train "
                   "any run further in a new run folder.")
@click.option("--init-from", "init_from", type=click.Path(file_okay=False), metavar="RUN_DIR",
              help="Start from a completed run's weights (fine-tuning; same as --set model.init_from=RUN_DIR).")
@click.option("--workers", metavar="HOST:PORT,...",
              help="Train as one of these machines (the same list on each; the first is the chief, which writes "
                   "the run folder): sets TF_CONFIG and training.distribute.strategy=multi_worker.")
@click.option("--worker-index", type=int, metavar="I", help="This machine's position in --workers (0-based).")
@click.option("--quiet", "-q", is_flag=True,
              help="Print only the result lines (test accuracy, run folder) and warnings: no bar, no epochs.")
@click.option("--export", "exports", type=click.Choice(["savedmodel", "tflite", "onnx"]), multiple=True,
              help="Also export the finished model (as `mnist export`, into <run>/export/); repeatable.")
def train(config_path, overrides, data_dir, device, seed, epochs, output_dir, resume_dir, init_from, workers,
          worker_index, quiet, exports) -> None:
    """Train the configured model, validate each epoch, test the best weights, write a run folder.

    A checkpoint is written after every epoch. Ctrl-C (or SIGTERM) stops after the current step (after the
    last epoch too: before the test) and marks the run interrupted (exit 130 / 143); a second Ctrl-C stops
    at once. --resume continues it exactly. --resume RUN --epochs N trains a run (completed or stopped)
    further, up to N epochs in all, in a new run folder: the learning-rate schedule is laid out over the N
    epochs, early stopping's patience starts again, and RUN stays as it was.
    Several devices: --set training.distribute.strategy=mirrored; several machines: --workers
    (docs/guide/distribute.md).

    Example: mnist train --config configs/cnn.yaml --set training.epochs=3 --device cpu
    """
    from mnist_pipeline import distribute, runtime
    from mnist_pipeline.config import load_config  # pydantic schemas: only when used
    from mnist_pipeline.export import check_format, export_run, precision_note  # no TensorFlow until an export
    from mnist_pipeline.pipeline import Events, run  # no TensorFlow until run() starts
    from mnist_pipeline.reports.run_reader import short_run_note
    from mnist_pipeline.resume import continue_run, open_resumable, wants_new_folder

    exports = list(dict.fromkeys(exports))
    for fmt in exports:  # a missing converter is said before training, not after
        check_format(fmt)
    if worker_index is not None and not workers:
        raise ConfigError("--worker-index needs --workers (the list of every worker's host:port)")
    if workers:
        distribute.set_workers(workers, worker_index)
    flags = {"data.data_dir": data_dir, "training.device": device, "training.seed": seed,
             "training.epochs": epochs, "output.dir": output_dir,
             "model.init_from": os.path.abspath(init_from) if init_from else None,
             "training.distribute.strategy": "multi_worker" if workers and not resume_dir else None}
    resume = None
    if resume_dir:
        given = [name for name, value in (("--config", config_path), ("--set", overrides), ("--seed", seed),
                                           ("--output-dir", output_dir), ("--init-from", init_from))
                 if value not in (None, ())]
        if given:
            raise ConfigError(f"--resume goes on with the run's saved config; drop {', '.join(given)} "
                              f"(with --resume, only --epochs, --data-dir, --device and --workers apply)")
        if epochs is not None and wants_new_folder(resume_dir, epochs):
            if workers:
                raise ConfigError("--resume with more --epochs makes a new run folder, on one machine; drop "
                                  "--workers")
            resume = continue_run(resume_dir, epochs)
            click.echo(f"training {resume_dir} further, up to epoch {epochs}, in a new run folder "
                       f"{resume.run_dir} ({resume_dir} stays as it was)")
        else:
            cluster = distribute.cluster_from_env()
            # Locks the folder: a second --resume is refused from here on. Other workers only read it.
            resume = open_resumable(resume_dir, lock=cluster is None or cluster.chief)
        config_path = resume.run_dir / "config.yaml"
    cfg = load_config(config_path, overrides, flags)
    # What the config plans as written: --epochs, --set and a smaller --data-dir can make a run far shorter.
    as_written = None if resume else _as_written(config_path)

    # The bar only on a terminal: in a log file its redraws would be noise. The epoch table goes everywhere.
    progress = TrainingProgress(bar=sys.stdout.isatty(), quiet=quiet, batch_size=cfg.training.batch_size)
    try:
        with runtime.StopSignals() as signals:
            events = Events(log=progress.log, step=progress.step, epoch=progress.epoch_done,
                            stop_requested=signals.requested, warn=_warner(progress))
            result = run(cfg, events, resume=resume, as_written=as_written)
    except Interrupted as exc:
        progress.clear()
        interrupted = Interrupted(f"{signals.name}: {exc}")
        interrupted.exit_code = signals.exit_code
        raise interrupted from None
    except BaseException:
        progress.clear()  # the error line must start at the beginning of a line of its own
        raise
    if signals.requested():  # after the test: the files were being written, and finishing beat stopping
        click.echo(f"note: {signals.name} came while the finished run's files were being written; the run is "
                   f"complete", err=True)
    m = result.metrics
    if result.run_dir is None:  # a worker that is not the chief
        cluster = distribute.cluster_from_env()
        click.echo(f"test  loss {m['test_loss']:.4f}  acc {m['test_accuracy']:.4f}  (best epoch {m['best_epoch']}, "
                   f"weights sha256 {m['weights_sha256'][:16]})")
        click.echo(f"{cluster.describe()} done; the chief ({cluster.workers[0]}) wrote the run folder")
        return
    click.echo(f"test  loss {m['test_loss']:.4f}  acc {m['test_accuracy']:.4f}  "
               f"(best epoch {m['best_epoch']} by val_loss; {m['wall_seconds']:.1f}s total)")
    note = short_run_note(m)
    if note:  # a result line too: the accuracy above is not the config's
        click.echo(note)
    for fmt in exports:
        click.echo(f"{fmt}: {export_run(result.run_dir, fmt)}")
    export_note = precision_note(m["precision"]) if exports else None
    if export_note:
        click.echo(export_note, err=True)
    click.echo(f"run folder: {result.run_dir}")


def _warner(progress):
    """Where training's warnings go: above the progress bar on a terminal, else to stderr, beside errors, so
    that a log of stdout keeps the epoch table and a script reading stderr sees every warning."""
    if progress.bar_enabled:
        return progress.warn
    return lambda message: click.echo(message, err=True)


def _as_written(config_path):
    """The config file alone, without --set or flags (None when only they make it a valid config)."""
    from mnist_pipeline.config import load_config

    try:
        return load_config(config_path)
    except ConfigError:
        return None
