from datetime import datetime, timezone

import pytest

from mnist_pipeline.errors import OutputError
from mnist_pipeline.reports import run_folder

NOW = datetime(2026, 11, 23, 12, 0, 5, tzinfo=timezone.utc)


def test_run_dirs_are_timestamped_and_never_reused(tmp_path):
    first = run_folder.create_run_dir(tmp_path, "cnn", now=NOW)
    (first / "keep.txt").write_text("earlier result")
    second = run_folder.create_run_dir(tmp_path, "cnn", now=NOW)
    third = run_folder.create_run_dir(tmp_path, "cnn", now=NOW)
    assert [p.name for p in (first, second, third)] == [
        "20261123T120005Z-cnn", "20261123T120005Z-cnn-2", "20261123T120005Z-cnn-3"]
    assert (first / "keep.txt").read_text() == "earlier result"
    assert not any(second.iterdir())


def test_atomic_write_replaces_whole_file_and_leaves_no_temp_files(tmp_path):
    run_folder.write_json(tmp_path / "m.json", {"a": 1})
    run_folder.write_json(tmp_path / "m.json", {"a": 2})
    assert (tmp_path / "m.json").read_text() == '{\n  "a": 2\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_write_into_a_missing_folder_is_an_output_error(tmp_path):
    with pytest.raises(OutputError, match="m.json: cannot write"):
        run_folder.write_text(tmp_path / "gone" / "m.json", "x")


def test_history_csv_has_keras_column_names(tmp_path):
    run_folder.write_history(tmp_path, [{"epoch": 1, "loss": 0.5, "accuracy": 0.8, "val_loss": 0.4,
                                         "val_accuracy": 0.85, "learning_rate": 1e-3, "seconds": 1.25}])
    assert (tmp_path / "history.csv").read_text().splitlines() == [
        "epoch,loss,accuracy,val_loss,val_accuracy,learning_rate,seconds", "1,0.5,0.8,0.4,0.85,0.001,1.25"]
