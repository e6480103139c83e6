"""The `mnist` command line: parse options, call the library, print results, exit with a code.

The only module that prints for the user or exits. TensorFlow is imported inside the commands that train,
so `mnist --help`, `mnist models` and config errors stay fast.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click

from mnist_pipeline import __version__
from mnist_pipeline.config import MODEL_PARAMS, describe_fields, describe_model_params, load_config, to_yaml
from mnist_pipeline.errors import ConfigError, Interrupted, PipelineError
from mnist_pipeline.reports import run_folder as rf


class _Group(click.Group):
    """Turns library errors into one line on stderr and an exit code (2 usage/config, 1 runtime)."""

    def main(self, *args, **kwargs):
        # Click's own usage errors print the usage block too; ours are one line, like every other error.
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.UsageError as exc:
            where = f"; see `{exc.ctx.command_path} --help`" if exc.ctx else ""
            click.echo(f"error: {exc.format_message().rstrip('.')}{where}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("interrupted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except PipelineError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except BrokenPipeError:  # `mnist models | head`: the reader left, nothing to report
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except Exception as exc:
            if ctx.obj and ctx.obj.get("traceback"):
                raise
            first_line = (str(exc).strip().splitlines() or [""])[0][:300]
            click.echo(f"error: unexpected {type(exc).__name__}: {first_line} "
                       f"(rerun with `mnist --traceback ...` for details)", err=True)
            ctx.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mnist")
@click.option("--traceback", is_flag=True, help="Show the full Python traceback of unexpected errors.")
@click.pass_context
def cli(ctx: click.Context, traceback: bool) -> None:
    """Train, evaluate and compare MNIST classifiers from YAML configs.

    Example: mnist train --config configs/cnn.yaml --data-dir ../shared/data/mnist-small
    """
    ctx.obj = {"traceback": traceback}


@cli.command()
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
              help="Continue an interrupted run in its own folder from its last checkpoint.")
def train(config_path, overrides, data_dir, device, seed, epochs, output_dir, resume_dir) -> None:
    """Train the configured model, validate each epoch, test the best weights, write a run folder.

    A checkpoint is written after every epoch. Ctrl-C (or SIGTERM) stops after the current step and
    marks the run interrupted (exit 130 / 143); a second Ctrl-C stops at once. --resume continues it.

    Example: mnist train --config configs/cnn.yaml --set training.epochs=3 --device cpu
    """
    from mnist_pipeline import runtime
    from mnist_pipeline.pipeline import Events, check_resumable, run  # no TensorFlow until run() starts

    flags = {"data.data_dir": data_dir, "training.device": device, "training.seed": seed,
             "training.epochs": epochs, "output.dir": output_dir}
    resume = None
    if resume_dir:
        if config_path or overrides or seed is not None or epochs is not None or output_dir:
            raise ConfigError("--resume continues a run with its saved config; it takes only --data-dir and "
                              "--device (drop --config, --set, --seed, --epochs, --output-dir)")
        resume = check_resumable(resume_dir)
        config_path = resume / "config.yaml"
    cfg = load_config(config_path, overrides, flags)

    progress = _Progress(enabled=sys.stdout.isatty())
    try:
        with runtime.StopSignals() as signals:
            events = Events(log=click.echo, step=progress.update, epoch=progress.epoch_done,
                            stop_requested=signals.requested)
            result = run(cfg, events, resume=resume)
    except Interrupted as exc:
        interrupted = Interrupted(f"{signals.name}: {exc}")
        interrupted.exit_code = signals.exit_code
        raise interrupted from None
    m = result.metrics
    click.echo(f"test  loss {m['test_loss']:.4f}  acc {m['test_accuracy']:.4f}  (best epoch {m['best_epoch']}, "
               f"{m['parameters']:,} parameters, {m['wall_seconds']:.1f}s on {m['device']})")
    click.echo(f"run folder: {result.run_dir}")


@cli.group()
def config() -> None:
    """Show, check and document run configs without training.

    Example: mnist config validate configs/*.yaml
    """


@config.command("show")
@click.argument("config_path", metavar="FILE", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override a config value.")
def config_show(config_path, overrides) -> None:
    """Print the resolved config (defaults filled in, overrides applied) as YAML.

    Example: mnist config show configs/cnn.yaml --set training.epochs=3
    """
    click.echo(to_yaml(load_config(config_path, overrides)), nl=False)


@config.command("validate")
@click.argument("config_paths", metavar="FILE...", nargs=-1, required=True, type=click.Path(dir_okay=False))
def config_validate(config_paths) -> None:
    """Check config files; print one line per file; exit 0 when all are valid, 2 otherwise.

    Example: mnist config validate configs/*.yaml
    """
    bad = 0
    for path in config_paths:
        try:
            load_config(path)
            click.echo(f"ok: {path}")
        except ConfigError as exc:
            bad += 1
            click.echo(f"error: {exc}", err=True)
    if bad:
        sys.exit(2)


@config.command("fields")
def config_fields() -> None:
    """Every config key with its type, allowed range, default and meaning (model.params: see `mnist models`).

    Example: mnist config fields
    """
    for key, type_name, default, description in describe_fields():
        click.echo(f"{key:<38} {type_name:<40} default {_show(default):<10} {description}")


@cli.command()
def models() -> None:
    """List the registered models with their parameters and defaults (the keys of model.params).

    Example: mnist models
    """
    for name, schema in MODEL_PARAMS.items():
        click.echo(f"{name}: {(schema.__doc__ or '').strip()}")
        for param, type_name, default, description in describe_model_params(name):
            click.echo(f"  {param:<19} {_show(default):<16} {description} [{type_name}]")
        click.echo("")


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
def report(run_dir) -> None:
    """Redraw a run's figures and rewrite its report.md and self-contained report.html.

    Works on failed or unfinished runs too (with what they have). Needs no TensorFlow and no data.

    Example: mnist report outputs/runs/20261123T120000Z-cnn
    """
    from mnist_pipeline.reports.document import write_report  # NumPy and matplotlib: only when drawing

    path = _existing_dir(run_dir)
    for file in write_report(path):
        click.echo(f"wrote {file}")
    click.echo(f"report: {path / 'report.html'}")


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--data-dir", metavar="DIR", help="Data to evaluate on (default: the run's data source).")
@click.option("--split", type=click.Choice(["test", "val"]), default="test", show_default=True,
              help="The run's test split, or its validation split (re-derived from the run's seed).")
def evaluate(run_dir, data_dir, split) -> None:
    """Reload a run's model and normalization and evaluate it again; compare with metrics.json.

    Example: mnist evaluate outputs/runs/20261123T120000Z-cnn --split val
    """
    from mnist_pipeline.inference import evaluate_run

    r = evaluate_run(run_dir, split, data_dir)
    click.echo(f"{split}  loss {r['loss']:.4f}  acc {r['accuracy']:.4f}  ({r['examples']:,} examples, "
               f"{r['data_source']})")
    if r["recorded_accuracy"] is not None:
        same = r["loss"] == r["recorded_loss"] and r["accuracy"] == r["recorded_accuracy"]
        click.echo(f"metrics.json: loss {r['recorded_loss']:.4f}  acc {r['recorded_accuracy']:.4f}  "
                   f"({'identical' if same else 'different: other data or weights?'})")


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the predictions as JSON.")
def predict(run_dir, files, as_json) -> None:
    """Classify image files (PNG/JPEG, any size; made MNIST-like) or .npy arrays with a run's model.

    Prints the predicted class and the top-3 probabilities per image. A bad file gets one error line and
    the others are still predicted; the exit code is then 1.

    Example: mnist predict outputs/runs/20261123T120000Z-cnn digit.png more.npy
    """
    from mnist_pipeline.inference import predict_files

    predictions = predict_files(run_dir, list(files))
    if as_json:
        click.echo(json.dumps([{"file": p.source, "prediction": p.top[0][0] if p.top else None,
                                "top": [{"class": c, "probability": round(q, 6)} for c, q in p.top],
                                **({"error": p.error} if p.error else {})} for p in predictions], indent=2))
    for p in predictions:
        if p.error:
            click.echo(f"error: {p.error}", err=True)
        elif not as_json:
            top = ", ".join(f"{c} {q:.3f}" for c, q in p.top)
            click.echo(f"{p.source}: {p.top[0][0]}  (top {len(p.top)}: {top})")
    if any(p.error for p in predictions):
        sys.exit(1)


@cli.command()
@click.argument("run_dirs", nargs=-1, type=click.Path())
@click.option("--all", "all_runs", is_flag=True, help="Compare every run under OUTPUT_DIR/runs.")
@click.option("--output-dir", default="outputs", show_default=True, metavar="DIR",
              help="Where runs are found (--all) and comparisons/ is written.")
def compare(run_dirs, all_runs, output_dir) -> None:
    """Rank runs by test accuracy; write comparison.md and comparison.png (validation curves overlaid).

    Failed and unfinished runs are listed with their status.

    Example: mnist compare --all
    """
    from mnist_pipeline.reports.compare import COLUMNS, find_runs, rank, summarize_run, write_comparison

    paths = find_runs(Path(output_dir)) if all_runs else [_existing_dir(d) for d in run_dirs]
    if not paths:
        raise ConfigError(f"no runs to compare: pass RUN_DIR... or --all (found none under {output_dir}/runs)")
    summaries = rank([summarize_run(p) for p in paths])
    out_dir = rf.create_unique_dir(Path(output_dir) / "comparisons", "compare")
    files = write_comparison(summaries, out_dir)
    click.echo(_table(COLUMNS, [s.cells() for s in summaries]))
    if summaries[0].test_accuracy is not None:
        best = summaries[0]
        click.echo(f"best: {best.run_dir.name} ({best.model}, test accuracy {best.test_accuracy:.4f})")
    click.echo(f"comparison: {files[0]}")


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--data-dir", metavar="DIR", help="Data to evaluate on (default: the first run's data source).")
def ensemble(run_dirs, data_dir) -> None:
    """Average the members' softmax outputs on the test split; print the ensemble's accuracy and each member's.

    Example: mnist ensemble outputs/runs/*-cnn outputs/runs/*-mlp
    """
    from mnist_pipeline.inference import ensemble as run_ensemble

    result = run_ensemble(list(run_dirs), data_dir)
    rows = [[m["run"], m["model"], f"{m['test_accuracy']:.4f}", f"{m['test_loss']:.4f}"] for m in result["members"]]
    rows.append(["ensemble (mean softmax)", f"{len(rows)} models", f"{result['ensemble_accuracy']:.4f}",
                 f"{result['ensemble_loss']:.4f}"])
    click.echo(_table(["run", "model", "test acc", "test loss"], rows))
    click.echo(f"{result['examples']:,} test examples from {result['data_source']}")


@cli.group()
def diagnose() -> None:
    """Short diagnostic trainings that measure one thing.

    Example: mnist diagnose gradients --config configs/deep_mlp.yaml --compare model.params.activation=sigmoid,relu
    """


@diagnose.command("gradients")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), metavar="FILE", help="YAML run config.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override a config value.")
@click.option("--compare", "vary", metavar="KEY=V1,V2,...",
              help="One configuration per value of KEY, e.g. model.params.activation=sigmoid,relu.")
@click.option("--steps", type=click.IntRange(1, 10_000), default=20, show_default=True, help="Training steps.")
@click.option("--data-dir", type=str, metavar="DIR", help="Folder with IDX or .npz files.")
@click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), help="Where to train.")
@click.option("--output-dir", default="outputs", show_default=True, metavar="DIR",
              help="diagnostics/<timestamp>-gradients/ goes here.")
def gradients(config_path, overrides, vary, steps, data_dir, device, output_dir) -> None:
    """Record every layer's gradient norm over the first training steps; plot configurations side by side.

    Shows vanishing gradients: a deep sigmoid MLP's first layers get gradients orders of magnitude
    smaller than its last; a ReLU MLP's do not.

    Example: mnist diagnose gradients --config configs/deep_mlp.yaml --compare model.params.activation=sigmoid,relu
    """
    flags = {"data.data_dir": data_dir, "training.device": device}
    variants = {"config": ()}
    if vary:
        key, _, values = vary.partition("=")
        if not key or not values:
            raise ConfigError(f"--compare expects KEY=V1,V2,... (e.g. model.params.activation=sigmoid,relu), "
                              f"got {vary!r}")
        variants = {f"{key.split('.')[-1]}={v}": (f"{key}={v}",) for v in values.split(",")}
    configs = {label: load_config(config_path, (*overrides, *extra), flags) for label, extra in variants.items()}

    from mnist_pipeline.pipeline import diagnose_gradients  # imports TensorFlow: only once the configs are valid
    from mnist_pipeline.reports.diagnostics import first_to_last_ratios, write_gradient_report

    results = {label: diagnose_gradients(cfg, steps) for label, cfg in configs.items()}
    out_dir = rf.create_unique_dir(Path(output_dir) / "diagnostics", "gradients")
    files = write_gradient_report(results, out_dir, steps)
    ratios = first_to_last_ratios(results)
    click.echo(_table(["configuration", "first layer", "last layer", "last / first"],
                      [[label, f"{r['mean'][0]:.3e}", f"{r['mean'][-1]:.3e}", f"{ratios[label]:.3g}"]
                       for label, r in results.items()]))
    click.echo(f"gradients: {files[1]}")


def _show(value) -> str:
    return "null" if value is None else str(list(value) if isinstance(value, tuple) else value)


def _existing_dir(path: str) -> Path:
    if not Path(path).is_dir():
        raise ConfigError(f"{path}: no such run folder; runs are under <output dir>/runs/")
    return Path(path)


def _table(columns: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(columns, *rows, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in (columns, *rows)]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


class _Progress:
    """A one-line progress bar within each epoch (terminals only) and one fixed-format line per epoch."""

    WIDTH = 30

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.last_draw = 0.0

    def update(self, step: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last_draw < 0.1 and step != total):
            return
        self.last_draw = now
        filled = self.WIDTH * step // max(total, 1)
        click.echo(f"\r  [{'#' * filled}{'.' * (self.WIDTH - filled)}] {step}/{total}", nl=False)

    def epoch_done(self, r, epochs: int) -> None:
        if self.enabled:
            click.echo("\r" + " " * (self.WIDTH + 20) + "\r", nl=False)
        click.echo(f"epoch {r.epoch}/{epochs}  loss {r.loss:.4f}  acc {r.accuracy:.4f}  "
                   f"val_loss {r.val_loss:.4f}  val_acc {r.val_accuracy:.4f}  lr {r.learning_rate:.1e}  "
                   f"{r.seconds:.1f}s")


def main() -> None:
    cli(prog_name="mnist")


if __name__ == "__main__":
    main()
