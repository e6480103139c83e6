"""`mnist diagnose ...`: short trainings that measure one thing."""

from __future__ import annotations

from pathlib import Path

import click

from mnist_pipeline.cli.common import OrderedGroup, table
from mnist_pipeline.errors import ConfigError
from mnist_pipeline.reports import run_folder


@click.group(cls=OrderedGroup, short_help="Short diagnostic trainings that measure one thing.")
def diagnose() -> None:
    """Short diagnostic trainings that measure one thing.

    Example: mnist diagnose gradients --help   (its example is what `make diagnose` runs)
    """


@diagnose.command("gradients", short_help="Gradient norms per layer over the first steps.")
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
    smaller than its last; a ReLU MLP's do not. Batch normalization rescales each layer's inputs and hides
    the effect, and depth makes it: six layers, no batch norm, no dropout (what `make diagnose` runs):

    \b
    Example: mnist diagnose gradients --config configs/deep_mlp.yaml \\
        --set model.params.units=[128,128,128,128,128,128] \\
        --set model.params.batch_norm=false --set model.params.dropout_rate=0 \\
        --compare model.params.activation=sigmoid,relu
    """
    from mnist_pipeline.config import load_config

    flags = {"data.data_dir": data_dir, "training.device": device}
    variants = {"config": ()}
    if vary:
        key, _, values = vary.partition("=")
        if not key or not values:
            raise ConfigError(f"--compare expects KEY=V1,V2,... (e.g. model.params.activation=sigmoid,relu), "
                              f"got {vary!r}")
        variants = {f"{key.split('.')[-1]}={v}": (f"{key}={v}",) for v in values.split(",")}
    configs = {label: load_config(config_path, (*overrides, *extra), flags) for label, extra in variants.items()}

    from mnist_pipeline.diagnose import diagnose_gradients  # imports TensorFlow: only once the configs are valid
    from mnist_pipeline.reports.diagnostics import first_to_last_ratios, write_gradient_report

    results = {label: diagnose_gradients(cfg, steps) for label, cfg in configs.items()}
    out_dir = run_folder.create_unique_dir(Path(output_dir) / "diagnostics", "gradients", what="diagnostics folder")
    files = write_gradient_report(results, out_dir, steps)
    ratios = first_to_last_ratios(results)
    click.echo(table(["configuration", "first layer", "last layer", "last / first"],
                      [[label, f"{r['mean'][0]:.3e}", f"{r['mean'][-1]:.3e}", f"{ratios[label]:.3g}"]
                       for label, r in results.items()]))
    for label, r in results.items():
        if r["diverged_at_step"]:
            last = r["diverged_at_step"] - 1
            covered = "step 1" if last == 1 else f"steps 1-{last}"
            click.echo(f"note: {label}: the gradients became NaN or infinite at step {r['diverged_at_step']} "
                       f"(exploding), so its means cover {covered}; lower training.learning_rate to see further",
                       err=True)
    click.echo(f"gradients: {files[1]}")
