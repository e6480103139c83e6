"""The adversarial catalogue: every case of tests/catalogue/ (bad configs and flags, data, run folders, files to
predict, exports, `--json` outputs, sweeps) run as a real `mnist` process, through one runner with one set of
checks. A case must exit with its code; a failure prints exactly one line on stderr, `error: ...` naming the
problem (never `unexpected`, never a traceback, no TensorFlow log line); a success prints no error line and, where
asked, strict JSON (no NaN or Infinity). Nothing is left behind: no temporary or lock file, no process, no half
run; the folder it was pointed at and the reference run (or sweep) folder stay byte-identical.

Add cases to the tables in tests/catalogue/ when a new kind of bad input turns up, not tests here.
"""

from __future__ import annotations

import os

import pytest
from catalogue import (
    HELD_LOCKS,
    Case,
    configs,
    data_files,
    exports_and_json,
    leftovers,
    processes_mentioning,
    run_folders,
    strict_json,
    sweep_folders,
    sweeps,
)

from conftest import run_mnist as mnist
from conftest import snapshot

TABLES = (configs, data_files, run_folders, exports_and_json, sweeps, sweep_folders)
CASES: list[Case] = [case for table in TABLES for case in table.CASES]
FIXTURES = {"runs": "catalogue_runs_with_nan", "sweep": "catalogue_sweep"}
TIMEOUTS = {"runs": 300, "sweep": 240}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_catalogue(case, request, tmp_path):
    made = request.getfixturevalue(FIXTURES[case.needs])
    reference_folder = made[1]  # the completed run, or the finished sweep
    reference = snapshot(reference_folder)
    try:
        built = case.make(tmp_path, *made) if case.needs == "runs" else case.make(tmp_path, made)
        args, target, env = (*built, None)[:3]
        before = snapshot(target) if target and target.is_dir() and not HELD_LOCKS else None
        result = mnist(*args, env=env, timeout=TIMEOUTS[case.needs])
    finally:
        while HELD_LOCKS:  # the other export finishes: its lock file goes with it
            fd, path = HELD_LOCKS.pop()
            path.unlink()
            os.close(fd)
    lines = result.stderr.splitlines()
    assert result.returncode == case.code, result.stderr
    assert "unexpected" not in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    if case.code:
        assert len(lines) == 1, result.stderr  # one line, nothing else
        assert lines[0].startswith("error: "), result.stderr
        assert len(lines[0]) < 700, lines[0]  # hostile values are quoted short
        for word in case.words:
            assert word in lines[0], lines[0]
    else:
        assert not any(line.startswith("error") for line in lines), result.stderr
        for word in case.words:
            assert word in result.stdout, result.stdout
    if "--json" in args and case.code == 0:
        value = strict_json(result.stdout)
        if case.check:
            case.check(value)
    if before is not None:
        assert snapshot(target) == before  # refused or failed: the folder it was pointed at is as it was
    assert not leftovers(tmp_path), leftovers(tmp_path)
    assert not processes_mentioning(str(tmp_path))
    out = tmp_path / "out"
    if target is None and "not-started" not in case.skip_checks:  # refused before it started: no folder made
        assert not out.exists(), sorted(out.rglob("*"))
    if "half-run" not in case.skip_checks:  # no half run (the target may be a sweep under out: its runs are not)
        assert not [p for p in out.rglob("status.json") if not (target and p.is_relative_to(target))]
    assert not (tmp_path / "other.db").exists()
    assert snapshot(reference_folder) == reference


def test_catalogue_is_large_enough():
    # The three catalogues this one joined asked for 60, 30 - 4 (with 4 signal tests) and 35 cases.
    assert len(CASES) >= 60 + 26 + 35


def test_catalogue_ids_are_unique():
    ids = [case.id for case in CASES]
    assert len(set(ids)) == len(ids), sorted({i for i in ids if ids.count(i) > 1})


def test_sweep_catalogue_is_large_enough():
    assert len([case for case in CASES if case.needs == "sweep"]) >= 35


def test_sweep_catalogue_covers_each_class():
    names = " ".join(case.id for case in CASES if case.needs == "sweep")
    for word in ("grid-", "space-output", "float16", "storage-", "journal-", "sweep-json", "best-json", "rerun-",
                 "all-trials-fail"):
        assert word in names
