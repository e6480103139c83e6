"""Commands that score finished runs again: evaluate (a split, calibration, corruptions) and ensemble."""

from __future__ import annotations

import click
from click.core import ParameterSource

from mnist_pipeline.cli.common import TEMPERATURE_OPTION, strict_json, table
from mnist_pipeline.errors import ConfigError, plural


@click.command(short_help="Evaluate a saved run again: accuracy, calibration, corruptions.")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--data-dir", metavar="DIR", help="Data to evaluate on (default: the run's data source).")
@click.option("--split", type=click.Choice(["test", "val"]), default="test", show_default=True,
              help="The run's test split, or its validation split (re-derived from the run's seed).")
@click.option("--corruptions", is_flag=True,
              help="Also score the test split under each MNIST-C corruption; writes robustness.json into the run "
                   "folder (`mnist report RUN` then shows it; an earlier one scored another way is kept as "
                   "robustness-<time>.json).")
@click.option("--corruption-seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True,
              help="With --corruptions: the seed of their random choices (runs scored with one seed see the same "
                   "images).")
@TEMPERATURE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def evaluate(run_dir, data_dir, split, corruptions, corruption_seed, temperature, as_json) -> None:
    """Reload a run's model and normalization and evaluate it again; compare with metrics.json. Prints the
    calibration of its answers too (ECE, NLL, Brier), after its temperature unless --no-temperature.

    Example: mnist evaluate outputs/runs/20261123T120000Z-cnn --corruptions
    """
    from mnist_pipeline.reevaluation import evaluate_run

    if corruptions and split != "test":
        raise ConfigError("--corruptions scores the test split; drop --split val or --corruptions")
    seed_given = click.get_current_context().get_parameter_source("corruption_seed") is not ParameterSource.DEFAULT
    if seed_given and not corruptions:
        raise ConfigError("--corruption-seed picks the corruptions' random choices; add --corruptions, or drop it")
    r = evaluate_run(run_dir, split, data_dir, calibrated=temperature)
    robustness = None
    if corruptions:
        from mnist_pipeline.robustness import evaluate_corruptions

        def say(row) -> None:
            if not as_json:
                click.echo(f"  {row['name']:<14} acc {row['accuracy']:.4f}  ECE {row['ece']:.2%}")

        if not as_json:
            click.echo(f"test under MNIST-C's corruptions (seed {corruption_seed}):")
        from mnist_pipeline.runtime import StopAtOnce

        with StopAtOnce("evaluate --corruptions stopped; robustness.json was not written, the run folder is as "
                        "it was"):
            robustness = evaluate_corruptions(run_dir, data_dir, corruption_seed, temperature, on_result=say)
    if as_json:
        extra = {"robustness": {k: v for k, v in robustness.items() if k != "example_images"}} if robustness else {}
        click.echo(strict_json({"run": str(run_dir), **r, **extra}))
        return
    if robustness:
        click.echo(f"  mean of {len(robustness['corruptions'])}: acc {robustness['mean_accuracy']:.4f}  "
                   f"ECE {robustness['mean_ece']:.2%}  (clean: acc {robustness['clean']['accuracy']:.4f}); "
                   f"wrote robustness.json")
    click.echo(f"{split}  loss {r['loss']:.4f}  acc {r['accuracy']:.4f}  ({plural(r['examples'], 'example')}, "
               f"{r['data_source']})")
    calibration = r.get("calibration")
    if calibration:
        if not temperature:
            how = "no temperature"
        elif calibration["temperature_fitted"]:
            how = f"after temperature {calibration['temperature']:.3f}"
        else:
            how = "no temperature (this run has none: trained before calibration was measured)"
        click.echo(f"calibration ({how}): ECE {calibration['ece']:.2%}  MCE {calibration['mce']:.2%}  "
                   f"NLL {calibration['nll']:.4f}  Brier {calibration['brier']:.4f}")
    if r["recorded_accuracy"] is not None:
        click.echo(f"metrics.json: loss {r['recorded_loss']:.4f}  acc {r['recorded_accuracy']:.4f}  "
                   f"({r['difference']})")


@click.command(short_help="Average several runs' predictions on the test split.")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--data-dir", metavar="DIR", help="Data to evaluate on (default: the first run's data source).")
@TEMPERATURE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def ensemble(run_dirs, data_dir, temperature, as_json) -> None:
    """Average the members' softmax outputs on the test split, each divided by its own temperature unless
    --no-temperature; print the ensemble's accuracy, NLL and calibration error, and each member's.

    Each member prepares the images its own way (its normalization.json). Runs that are not completed are
    skipped, one line each on stderr; at least two completed runs are needed.

    Example: mnist ensemble outputs/runs/*-cnn outputs/runs/*-mlp
    """
    from mnist_pipeline.reevaluation import ensemble as run_ensemble

    result = run_ensemble(list(run_dirs), data_dir, calibrated=temperature)
    for skipped in result["skipped"]:
        click.echo(f"skipped: {skipped['run']}: {skipped['reason']}", err=True)
    for member in result["members"]:
        if temperature and not member["temperature_fitted"]:
            click.echo(f"note: {member['run']} has no fitted temperature (trained before calibration was "
                       f"measured): its probabilities go into the mean raw", err=True)
    if as_json:
        click.echo(strict_json(result))
        return
    rows = [[m["run"], m["model"], f"{m['test_accuracy']:.4f}", f"{m['test_loss']:.4f}", f"{m['test_ece']:.2%}",
             f"{m['temperature']:.2f}"] for m in result["members"]]
    rows.append(["ensemble (mean softmax)", f"{len(rows)} models", f"{result['ensemble_accuracy']:.4f}",
                 f"{result['ensemble_loss']:.4f}", f"{result['ensemble_ece']:.2%}", ""])
    click.echo(table(["run", "model", "test acc", "test NLL", "ECE", "temperature"], rows))
    click.echo(f"{plural(result['examples'], 'test example')} from {result['data_source']}")
