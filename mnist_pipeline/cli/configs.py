"""`mnist config show|validate|list|fields` and `mnist models`: everything about configs, without TensorFlow."""

from __future__ import annotations

import json
import sys

import click

from mnist_pipeline.cli.common import OrderedGroup, terminal_width, wrap, wrapped_table
from mnist_pipeline.errors import ConfigError


@click.group(cls=OrderedGroup, short_help="Show, check and document run configs.")
def config() -> None:
    """Show, check and document run configs without training.

    Example: mnist config validate configs/*.yaml
    """


@config.command("show", short_help="Print the resolved config as YAML.")
@click.argument("config_path", metavar="[FILE]", required=False, type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override a config value.")
def configshow(config_path, overrides) -> None:
    """Print the resolved config (defaults filled in, overrides applied) as YAML; without FILE, what
    `mnist train` uses without --config.

    Example: mnist config show configs/cnn.yaml --set training.epochs=3
    """
    from mnist_pipeline.config import load_config, to_yaml

    click.echo(to_yaml(load_config(config_path, overrides)), nl=False)


@config.command("validate", short_help="Check config files (exit 2 if any is invalid).")
@click.argument("config_paths", metavar="FILE...", nargs=-1, required=True, type=click.Path(dir_okay=False))
def config_validate(config_paths) -> None:
    """Check config files; print one line per file; exit 0 when all are valid, 2 otherwise.

    Example: mnist config validate configs/*.yaml
    """
    from mnist_pipeline.config import load_config

    bad = 0
    for path in config_paths:
        try:
            load_config(path)
            click.echo(f"ok: {path}")
        except ConfigError as exc:
            bad += 1
            for problem in getattr(exc, "problems", None) or [str(exc)]:  # every problem, each with its fix
                click.echo(f"error: {problem}", err=True)
    if bad:
        sys.exit(2)


@config.command("list", short_help="The configs that ship with mnist-pipeline, by name.")
def config_list() -> None:
    """The run configs, study lessons and sweep spaces that ship with mnist-pipeline. Pass a name where a
    file is asked for, from any folder: `mnist train --config cnn`, `mnist sweep --config mlp --space mlp`.

    Example: mnist config list
    """
    from mnist_pipeline.config.shipped import SHIPPED, listing

    runs = listing()
    for title, entries in (("run configs (--config NAME)", [e for e in runs if "/" not in e[0]]),
                           ("study lessons (--config NAME; make study)", [e for e in runs if "/" in e[0]]),
                           ("sweep spaces (mnist sweep --space NAME)", listing(space=True))):
        click.echo(f"{title}:")
        click.echo(wrapped_table(None, [[name, summary] for name, summary in entries], indent="  "))
    click.echo("`mnist config show NAME` prints one, resolved; the files are in:")
    click.echo(str(SHIPPED))  # a line of its own: a path is as long as the install makes it


@config.command("fields", short_help="Every config key: type, range, default, meaning.")
@click.option("--json", "as_json", is_flag=True, help="Print the fields as a JSON list.")
def config_fields(as_json) -> None:
    """Every config key with its type, allowed range, default and meaning (model.params: see `mnist models`).

    Example: mnist config fields
    """
    from mnist_pipeline.config import describe_fields, yaml_value

    if as_json:
        click.echo(json.dumps([{"key": key, "type": type_name, "default": default, "description": description}
                               for key, type_name, default, description in describe_fields()], indent=2))
        return
    rows = [[key, type_name, yaml_value(default), description] for key, type_name, default, description
            in describe_fields()]
    click.echo(wrapped_table(["key", "type and range", "default", "meaning"], rows, wrapped={1}))


@click.command(short_help="The registered models and their parameters.")
@click.option("--json", "as_json", is_flag=True, help="Print the models and their parameters as one JSON object.")
def models(as_json) -> None:
    """List the registered models with their parameters and defaults (the keys of model.params).

    Example: mnist models
    """
    from mnist_pipeline.config import MODEL_PARAMS, describe_model_params, yaml_value

    if as_json:
        click.echo(json.dumps({name: {"description": (schema.__doc__ or "").strip(),
                                      "params": {param: {"type": type_name, "default": default,
                                                         "description": description}
                                                 for param, type_name, default, description
                                                 in describe_model_params(name)}}
                               for name, schema in MODEL_PARAMS.items()}, indent=2))
        return
    described = {name: [[param, yaml_value(default), f"{description} [{type_name}]"]
                        for param, type_name, default, description in describe_model_params(name)]
                 for name in MODEL_PARAMS}
    # Padded to the widest name and default of any model, so that every model's columns line up.
    name_width, default_width = (max(len(row[i]) for rows in described.values() for row in rows) for i in (0, 1))
    for name, schema in MODEL_PARAMS.items():
        click.echo("\n".join(wrap(f"{name}: {(schema.__doc__ or '').strip()}", terminal_width())))
        click.echo(wrapped_table(None, [[param.ljust(name_width), default.ljust(default_width), text]
                                        for param, default, text in described[name]], indent="  "))
        click.echo("")
