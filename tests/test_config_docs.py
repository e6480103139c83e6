"""`config.docs` and the commands that print it: `mnist config fields` and `mnist models`.

The type texts are checked against what pydantic really accepts, and the printed tables are read back by
column position, so a misaligned row or a lost word fails."""

import math
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner
from pydantic import BaseModel, ValidationError

from conftest import ROOT
from mnist_pipeline.cli import cli
from mnist_pipeline.config import MODEL_PARAMS, RunConfig, describe_fields, describe_model_params, yaml_value

UNDER = "    "  # where `config fields` puts the meaning when it has no room beside the other columns


def invoke(*args, columns: int):
    return CliRunner().invoke(cli, list(args), env={"COLUMNS": str(columns)})


def every_row() -> list[tuple[type[BaseModel], str, str]]:
    """(section model, field name, type text) of every config key and every model parameter."""
    rows = []
    for key, text, _, _ in describe_fields():
        *path, name = key.split(".")
        section = RunConfig
        for part in path:
            section = section.model_fields[part].annotation
        rows.append((section, name, text))
    for model, schema in MODEL_PARAMS.items():
        rows += [(schema, param, text) for param, text, _, _ in describe_model_params(model)]
    return rows


def refused(section: type[BaseModel], name: str, value) -> bool:
    """Whether pydantic refuses `value` for this one field (errors of other fields or of whole-model checks,
    which need the rest of a config, are not the field's)."""
    try:
        section.model_validate({name: value})
    except ValidationError as exc:
        return any(error["loc"][:1] == (name,) for error in exc.errors())
    return False


LIMIT = re.compile(r"(?:(above )?(-?[\d.]+) to (below )?(-?[\d.]+)|(at least|above|at most|below) (-?[\d.]+))"
                   r"( characters| items)?$")


def edges(limit: str, kind: str) -> list[tuple[object, bool]]:
    """(value, accepted?) just inside and just outside each end of a limit such as "0 to below 1"."""
    match = LIMIT.fullmatch(limit)
    assert match, f"a limit this test cannot read: {limit!r}"
    low_open, low, high_open, high, word, bound, unit = match.groups()
    if word:
        low, low_open = (bound, word == "above") if word in ("at least", "above") else (None, None)
        high, high_open = (bound, word == "below") if word in ("at most", "below") else (None, None)
    number = int if kind == "int" or unit else float
    step_up = (lambda x: x + 1) if number is int else (lambda x: math.nextafter(x, math.inf))
    step_down = (lambda x: x - 1) if number is int else (lambda x: math.nextafter(x, -math.inf))
    cases = []
    if low is not None:
        low = number(low)
        cases += [(low, not low_open), (step_down(low), False), (step_up(low), True)]
    if high is not None:
        high = number(high)
        cases += [(high, not high_open), (step_up(high), False), (step_down(high), True)]
    shape = {" characters": lambda n: "x" * n, " items": lambda n: [1] * n}.get(unit, lambda x: x)
    return [(shape(value), accepted) for value, accepted in cases if not (unit and value < 0)]


OPTION = re.compile(r"(list of )?(int|float|str),? ?(.*)")


def test_every_limit_printed_is_the_one_pydantic_enforces_and_is_printed_once():
    """Issue 29: kernel_size read "int (<= 7, >= 1, <= 16384)"; pydantic keeps only the last `le` of an int."""
    probed = 0
    for section, name, text in every_row():
        for option in re.split(r"; or |, or | or ", text):  # "int at least 10, or null"
            match = OPTION.fullmatch(option)
            if not match:  # null, bool, dict, a list of choices: nothing to probe
                continue
            listed, kind, rest = match.groups()
            limits = rest.split(", ") if rest else []
            sorts = ["each" if lim.startswith("each ") else lim.rsplit(" ", 1)[-1] if lim.endswith(("characters",
                                                                                                    "items"))
                     else "value" for lim in limits]
            assert len(sorts) == len(set(sorts)), text  # each limit once: one range, not "<= 7, >= 1, <= 16384"
            for limit in limits:
                if "matching " in limit:  # a pattern: no numbers to probe; nor its list's length (any item fails)
                    break
                if limit.startswith("each "):
                    cases = [([value], ok) for value, ok in edges(limit.removeprefix("each "), kind)]
                else:
                    cases = edges(limit, "int" if listed else kind)
                for value, accepted in cases:
                    assert refused(section, name, value) != accepted, (name, text, repr(value)[:40], accepted)
                    probed += 1
    assert probed > 150  # every numeric field was probed, not skipped by a pattern that missed it


@pytest.mark.parametrize(("schema", "name", "text"), [
    (MODEL_PARAMS["cnn"], "filters", "list of int, each 1 to 2048, 1 to 4 items"),
    (MODEL_PARAMS["cnn"], "convs_per_block", "int 1 to 4, or list of int each 1 to 4"),
    (MODEL_PARAMS["cnn"], "padding", "same | valid"),
    (RunConfig.model_fields["data"].annotation, "subset", "int at least 10, or null"),
    (RunConfig.model_fields["data"].annotation, "validation_split", "float, above 0 to below 1"),
    (RunConfig.model_fields["training"].annotation, "jit_compile", "bool or auto"),
])
def test_type_texts_merge_the_limits_into_words(schema, name, text):
    assert dict((param, type_text) for param, type_text, *_ in describe_fields(schema))[name] == text


def test_cnn_kernel_size_is_limited_to_7():
    rows = dict((param, text) for param, text, *_ in describe_model_params("cnn"))
    assert rows["kernel_size"] == "int, 1 to 7"
    assert refused(MODEL_PARAMS["cnn"], "kernel_size", 8)


def read_columns(lines: list[str], starts: list[int]) -> list[str]:
    """The cells of one printed line, cut at the columns' start positions."""
    return [lines[start:end].strip() for start, end in zip(starts, [*starts[1:], None], strict=True)]


@pytest.mark.parametrize("columns", [80, 120, 200])
def test_config_fields_fits_the_width_with_every_row_aligned(columns):
    """Issue 29: lines ran to 269 characters and two long keys pushed their rows out of line."""
    result = invoke("config", "fields", columns=columns)
    assert result.exit_code == 0, result.output
    header, rule, *lines = result.output.splitlines()
    assert all(len(line) <= columns for line in result.output.splitlines()), result.output
    names = ["key", "type and range", "default", "meaning"]
    starts = [header.find(name) for name in names if name in header]
    assert starts[:3] == sorted(starts[:3])
    assert starts[0] == 0
    assert rule.split() == ["-" * len(w) for w in rule.split()]
    beside = len(starts) == 4  # 200: the meaning beside the rest; 80 and 120: under each row
    assert beside == (columns == 200)
    rows = []
    for line in lines:
        if not line.startswith(" "):  # a new key
            rows.append([[cell] for cell in read_columns(line, starts)] + ([] if beside else [[]]))
        elif not beside and line.startswith(UNDER) and line[len(UNDER)] != " ":  # meaning, under its row
            rows[-1][3].append(line.strip())
        else:  # a wrapped cell goes on in its own column, never left of it
            for cells, text in zip(rows[-1], read_columns(line, starts), strict=False):
                if text:
                    cells.append(text)
    expected = [[key, text, yaml_value(default), meaning] for key, text, default, meaning in describe_fields()]
    assert [[" ".join(parts) for parts in row] for row in rows] == expected


@pytest.mark.parametrize("columns", [80, 120])
def test_models_fits_the_width_with_the_columns_of_every_model_in_line(columns):
    result = invoke("models", columns=columns)
    assert result.exit_code == 0, result.output
    assert all(len(line) <= columns for line in result.output.splitlines()), result.output
    param_lines = [line for line in result.output.splitlines() if line.startswith("  ") and line[2] != " "]
    starts = [2, *sorted(_column_starts(param_lines))]
    assert len(starts) == 3, starts  # one name column and one default column for all models
    rows, model = {}, None
    for line in result.output.splitlines():
        if re.match(r"^[a-z_]+: ", line):
            model = line.split(":")[0]
            rows[model] = []
        elif line.startswith("  ") and line[2] != " ":
            rows[model].append(read_columns(line, starts))
        elif line.strip() and model and rows[model]:  # the meaning going on, in its own column
            assert line[:starts[2]].strip() == "", line
            rows[model][-1][2] += " " + line.strip()
    assert list(rows) == list(MODEL_PARAMS)
    for name in MODEL_PARAMS:
        assert rows[name] == [[param, yaml_value(default), f"{description} [{text}]"]
                              for param, text, default, description in describe_model_params(name)]


def _column_starts(lines: list[str]) -> set[int]:
    """Where the default and the meaning columns start: the positions at which every line has text right
    after two spaces (the gap), other than the name's."""
    starts = None
    for line in lines:
        found = {m.end() for m in re.finditer(r"  (?=\S)", line) if m.end() > 2}
        starts = found if starts is None else starts & found
    return starts or set()


def test_config_fields_and_models_do_not_import_tensorflow():
    probe = ("import sys\nfrom click.testing import CliRunner\nfrom mnist_pipeline.cli import cli\n"
             "codes = [CliRunner().invoke(cli, a, env={'COLUMNS': '80'}).exit_code for a in (['config', 'fields'],"
             " ['models'])]\nprint(codes, 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert done.stdout.strip() == "[0, 0] False False", done.stdout + done.stderr
