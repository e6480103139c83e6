"""The `mnist` command line: parse options, call the library, print results, exit with a code.

The only package that prints for the user or exits. TensorFlow is imported inside the commands that train,
so `mnist --help`, `mnist models` and config errors stay fast, and the pydantic config schemas only load in the
commands that need them. One module per group of commands.
"""

from __future__ import annotations

import os
import sys

import click

from mnist_pipeline import __version__
from mnist_pipeline.cli.common import OrderedGroup
from mnist_pipeline.cli.configs import config, models
from mnist_pipeline.cli.diagnose import diagnose
from mnist_pipeline.cli.runs import compare, export, predict, report
from mnist_pipeline.cli.scoring import ensemble, evaluate
from mnist_pipeline.cli.serve import serve
from mnist_pipeline.cli.sweep import sweep
from mnist_pipeline.cli.train import train
from mnist_pipeline.errors import Interrupted, PipelineError, StopNow

# click >= 8.2 raises this for a group called without a command (8.1 printed the help and exited 0 by itself).
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class _Group(OrderedGroup):
    """Turns library errors into one line on stderr and an exit code (2 usage/config, 1 runtime)."""

    def main(self, *args, **kwargs):
        # Click's own usage errors print the usage block too; ours are one line, like every other error.
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except _NO_ARGS_IS_HELP as exc:  # a bare group (`mnist`, `mnist config`): its help, as click exits
            click.echo(exc.ctx.get_help())
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            where = f"; see `{exc.ctx.command_path} --help`" if exc.ctx else ""
            message = " ".join(exc.format_message().split())  # click lists choices over several lines
            click.echo(f"error: {message.rstrip('.')}{where}", err=True)
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
        except Interrupted as exc:  # the user's own stop is not an error: what stopped and what can follow
            click.echo(str(exc), err=True)
            ctx.exit(exc.exit_code)
        except PipelineError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except BrokenPipeError:  # `mnist models | head`: the reader left, nothing to report
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(1)
        except StopNow as exc:
            click.echo(str(exc), err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
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
@click.option("--verbose", is_flag=True, help="Show TensorFlow's own log lines and warnings (hidden by default).")
@click.pass_context
def cli(ctx: click.Context, traceback: bool, verbose: bool) -> None:
    """Train, evaluate and compare MNIST classifiers from YAML configs.

    Example: mnist train --config configs/cnn.yaml --epochs 3
    """
    ctx.obj = {"traceback": traceback}
    if not verbose:
        from mnist_pipeline import runtime

        runtime.quiet_native_logs()



for command in (train, sweep, config, models, report, evaluate, predict, export, compare, ensemble, serve, diagnose):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="mnist")
