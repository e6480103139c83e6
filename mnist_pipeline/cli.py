"""The `mnist` command line: parse options, call the library, print results, exit with a code.

The only module that prints for the user or exits. TensorFlow is imported inside the commands that train,
so `mnist --help`, `mnist models` and config errors stay fast.
"""

from __future__ import annotations

import os
import sys
import time

import click

from mnist_pipeline import __version__
from mnist_pipeline.config import MODEL_PARAMS, describe_model_params, load_config
from mnist_pipeline.errors import PipelineError


class _Group(click.Group):
    """Turns library errors into one line on stderr and an exit code (2 usage/config, 1 runtime)."""

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
        except (click.exceptions.Exit, click.ClickException, click.Abort):
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
def train(config_path, overrides, data_dir, device, seed, epochs, output_dir) -> None:
    """Train the configured model, validate each epoch, test the best weights, write a run folder.

    Example: mnist train --config configs/cnn.yaml --set training.epochs=3 --device cpu
    """
    flags = {"data.data_dir": data_dir, "training.device": device, "training.seed": seed,
             "training.epochs": epochs, "output.dir": output_dir}
    cfg = load_config(config_path, overrides, flags)

    from mnist_pipeline.pipeline import Events, run  # imports TensorFlow: only now that the config is valid

    progress = _Progress(enabled=sys.stdout.isatty())
    result = run(cfg, Events(log=click.echo, step=progress.update, epoch=progress.epoch_done))
    m = result.metrics
    click.echo(f"test  loss {m['test_loss']:.4f}  acc {m['test_accuracy']:.4f}  (best epoch {m['best_epoch']}, "
               f"{m['parameters']:,} parameters, {m['wall_seconds']:.1f}s on {m['device']})")
    click.echo(f"run folder: {result.run_dir}")


@cli.command()
def models() -> None:
    """List the registered models with their parameters and defaults (the keys of model.params).

    Example: mnist models
    """
    for name, schema in MODEL_PARAMS.items():
        click.echo(f"{name}: {(schema.__doc__ or '').strip()}")
        for param, type_name, default, description in describe_model_params(name):
            shown = list(default) if isinstance(default, tuple) else default
            click.echo(f"  {param:<19} {shown!s:<16} {description} [{type_name}]")
        click.echo("")


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
