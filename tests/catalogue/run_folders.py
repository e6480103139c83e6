"""Damaged or refused run folders: resume, evaluate, ensemble and report, each on a changed copy of a run."""

from __future__ import annotations

import json
import shutil

import numpy as np

from catalogue import Case
from catalogue.builders import edit_json, flip_byte, not_a_run, on_run, remove, run_copy, truncate, write
from conftest import write_idx_dir


def resume_other_data(tmp, data, completed, resumable, diverged):
    folder = run_copy("resumable")(tmp, completed, resumable)
    other = write_idx_dir(tmp / "other", n_train=310, n_test=100)
    return ["train", "--resume", folder, "--data-dir", other], folder




def ensemble_with(change):
    def make(tmp, data, completed, resumable, diverged):
        good = run_copy("completed", name="good")(tmp, completed, resumable)
        bad = run_copy("completed", change, name="bad")(tmp, completed, resumable)
        return ["ensemble", good, bad, "--data-dir", data], bad
    return make


def resave_report_data(**arrays):
    """Rewrite report_data.npz with some arrays replaced (a value, or a function of the old one)."""
    def change(folder):
        path = folder / "report_data.npz"
        with np.load(path) as data:
            kept = dict(data)
        kept.update({k: v(kept[k]) if callable(v) else v for k, v in arrays.items()})
        np.savez(path, **kept)
    return change


def report_on(change):
    return on_run("report", "completed", change)


def resume_with_workers(tmp, data, completed, resumable, diverged):
    folder = shutil.copytree(resumable, tmp / "run")
    return ["train", "--resume", folder, "--data-dir", data, "--workers", "localhost:2900,localhost:2901",
            "--worker-index", "0"], folder, None




CASES = [
    # -- resume (refusals exit 2 and change nothing; damaged files exit 1) --
    Case("resume-not-a-run", not_a_run("resume"), 2, ["not a run folder"]),
    Case("resume-completed", on_run("resume", "completed"), 2, ["already completed"]),
    Case("resume-config-edited", on_run("resume", "resumable", lambda f: (f / "config.yaml").write_text(
        (f / "config.yaml").read_text().replace("epochs: 3", "epochs: 4"))), 2, ["config.yaml was changed"]),
    Case("continue-config-edited", on_run("resume", "completed", lambda f: (f / "config.yaml").write_text(
        (f / "config.yaml").read_text().replace("batch_size: 32", "batch_size: 16")), "--epochs", "9"), 2,
     ["config.yaml was changed"]),
    Case("continue-fewer-epochs", on_run("resume", "completed", None, "--epochs", "1"), 2, ["already; to continue it"]),
    Case("resume-other-data", resume_other_data, 2, ["not the data the run started with"]),
    Case("resume-no-checkpoint", on_run("resume", "resumable", remove("checkpoints")), 2,
     ["no checkpoint", "mnist train --config"]),
    Case("resume-extra-flags", on_run("resume", "resumable", None, "--seed", "5"), 2,
     ["--resume goes on", "drop --seed"]),
    Case("resume-checkpoint-truncated", on_run("resume", "resumable", truncate("training.data-*")), 1,
     ["training.data-00000-of-00001", "damaged"]),
    Case("resume-checkpoint-bitflip", on_run("resume", "resumable", flip_byte("training.data-*")), 1,
     ["training.data-00000-of-00001"]),
    Case("resume-state-garbage", on_run("resume", "resumable", write("epoch-*/state.json", "{nope")), 1,
     ["state.json", "not valid JSON"]),
    Case("resume-state-missing", on_run("resume", "resumable", remove("epoch-*/state.json")), 1,
     ["state.json", "file not found"]),
    Case("resume-best-weights-garbage", on_run("resume", "resumable", write("epoch-*/best_weights.npz", b"PK\x03\x04")),
     1, ["best_weights.npz"]),
    Case("resume-fingerprint-missing", on_run("resume", "resumable", remove("fingerprint.json")), 1,
     ["fingerprint.json"]),
    Case("resume-status-garbage", on_run("resume", "resumable", write("status.json", "\x00\x01")), 1, ["status.json"]),
    Case("resume-status-unknown", on_run("resume", "resumable", edit_json("status.json", status="paused")), 1,
     ["status.json", "'status'"]),
    # -- evaluate --
    Case("evaluate-not-a-run", not_a_run("evaluate"), 2, ["not a run folder"]),
    Case("evaluate-unfinished", on_run("evaluate", "resumable"), 1, ["the run is running", "pick a completed run"]),
    Case("evaluate-metrics-garbage", on_run("evaluate", "completed", write("metrics.json", "[1, 2")), 1,
     ["metrics.json", "not valid JSON"]),
    Case("evaluate-metrics-wrong-type", on_run("evaluate", "completed",
                                                        edit_json("metrics.json", test_accuracy="high")),
     1, ["metrics.json", "'test_accuracy'"]),
    Case("evaluate-metrics-deep-json", on_run("evaluate", "completed", write("metrics.json", "[" * 200_000)), 1,
     ["metrics.json"]),
    Case("evaluate-normalization-zero-std", on_run("evaluate", "completed",
                                               edit_json("normalization.json", std=0)), 1, ["normalization.json"]),
    Case("evaluate-normalization-missing", on_run("evaluate", "completed", remove("normalization.json")), 1,
     ["normalization.json", "file not found"]),
    Case("evaluate-model-truncated", on_run("evaluate", "completed", truncate("model.keras", 300)), 1,
     ["model.keras", "not a whole one): it was damaged or replaced"]),
    Case("train-data-dir-empty", lambda tmp, *_: (["train", "--data-dir", "", "--output-dir", tmp / "out"], None), 2,
     ["data.data_dir = ''", "an empty folder name", "leave data_dir out"]),
    Case("evaluate-data-dir-empty", on_run("evaluate", "completed", None, "--data-dir", ""), 2,
     ["--data-dir '' is empty", "leave the option out"]),
    Case("evaluate-model-garbage", on_run("evaluate", "completed", write("model.keras", "not a model\n")), 1,
     ["model.keras", "not a readable Keras model file", "damaged or replaced"]),
    Case("predict-model-garbage", lambda tmp, data, completed, resumable, diverged: (
        (shutil.copytree(completed, tmp / "run") / "model.keras").write_text("{}") and
        ["predict", tmp / "run", tmp / "run" / "samples.png"], tmp / "run"), 1, ["model.keras", "damaged or replaced"]),
    Case("evaluate-model-missing", on_run("evaluate", "completed", remove("model.keras")), 1,
     ["model.keras", "missing"]),
    Case("evaluate-config-garbage", on_run("evaluate", "completed", write("config.yaml", "model: [")), 2,
     ["config.yaml", "invalid YAML"]),
    Case("evaluate-status-missing", on_run("evaluate", "completed", remove("status.json")), 2, ["not a run folder"]),
    # -- calibration and robustness (the trust report) --
    Case("evaluate-calibration-temperature-zero", on_run("evaluate", "completed", edit_json(
        "metrics.json", calibration={"temperature": 0, "unsure_below": 0.5})), 1,
     ["metrics.json", "'calibration.temperature'", "not a positive number"]),
    Case("predict-calibration-not-an-object", on_run("predict", "completed",
                                                     edit_json("metrics.json", calibration="hot"),
                                                     lambda tmp: tmp / "run" / "samples.png"), 1,
     ["metrics.json", "'calibration'"]),
    Case("report-calibration-scores-missing", report_on(edit_json("metrics.json", calibration={
        "temperature": 1.5, "unsure_below": 0.5, "test_before": {"ece": 0.1}, "test_after": {}})), 1,
     ["metrics.json", "'calibration.test_before'"]),
    Case("evaluate-corruptions-on-validation", on_run("evaluate", "completed", None, "--corruptions", "--split", "val"),
     2, ["--corruptions scores the test split", "drop --split val"]),
    Case("evaluate-corruption-seed-negative", on_run("evaluate", "completed", None, "--corruptions",
                                                     "--corruption-seed", "-1"), 2, ["--corruption-seed", "-1"]),
    Case("evaluate-corruption-seed-alone", on_run("evaluate", "completed", None, "--corruption-seed", "7"), 2,
     ["--corruption-seed", "add --corruptions"]),
    Case("evaluate-corruptions-model-damaged", on_run("evaluate", "completed", truncate("model.keras", 300),
                                                      "--corruptions"), 1, ["model.keras", "damaged or replaced"]),
    Case("report-robustness-garbage", report_on(write("robustness.json", "{\"corruptions\": [")), 1,
     ["robustness.json", "not valid JSON"]),
    Case("report-robustness-no-corruptions", report_on(write("robustness.json", json.dumps(
        {"corruptions": [], "clean": {"accuracy": 0.9, "ece": 0.01}}))), 1, ["robustness.json", "'corruptions'"]),
    Case("report-robustness-accuracy-text", report_on(write("robustness.json", json.dumps(
        {"corruptions": [{"name": "fog", "accuracy": "high", "ece": 0.1}], "clean": {"accuracy": 0.9, "ece": 0.01}}))),
     1, ["robustness.json", "accuracy and ECE"]),
    Case("report-robustness-example-missing", report_on(write("robustness.json", json.dumps(
        {"corruptions": [{"name": "fog", "accuracy": 0.5, "ece": 0.1}], "clean": {"accuracy": 0.9, "ece": 0.01},
         "mean_accuracy": 0.5, "mean_ece": 0.1, "seed": 0, "examples": 100, "example_images": {"clean": [[0]]}}))),
     1, ["robustness.json", "'example_images'", "'clean'"]),
    Case("report-saliency-wrong-shape", report_on(resave_report_data(mistake_saliency=np.zeros((2, 3, 3)))), 1,
     ["report_data.npz", "mistake_saliency"]),
    Case("report-saliency-not-finite", report_on(resave_report_data(
        mistake_saliency=lambda old: np.full_like(old, np.nan))), 1, ["report_data.npz", "mistake_saliency"]),
    # -- ensemble --
    Case("ensemble-one-run", lambda tmp, data, completed, resumable, diverged: (["ensemble", completed], None), 2,
     ["at least two"]),
    Case("ensemble-same-run-twice", lambda tmp, data, completed, resumable, diverged: (
        ["ensemble", completed, completed], None), 2, ["given twice", "give each run once"]),
    Case("ensemble-member-damaged", ensemble_with(write("normalization.json", "null")), 1,
     ["normalization.json", "expected a JSON object"]),
    Case("ensemble-other-dataset", ensemble_with(lambda f: (f / "config.yaml").write_text(
        (f / "config.yaml").read_text().replace("dataset: mnist", "dataset: fashion_mnist"))), 2,
     ["differs"]),
    # -- report: refuses before it draws or overwrites anything --
    Case("report-not-a-run", not_a_run("report"), 2, ["not a run folder"]),
    Case("report-metrics-garbage", report_on(write("metrics.json", "{\"test_accuracy\": ")), 1, ["metrics.json"]),
    Case("report-history-garbage", report_on(write("history.csv", "epoch,loss\n1,x\n")), 1, ["history.csv", "header"]),
    Case("report-history-bad-row", report_on(lambda f: (f / "history.csv").write_text(
        (f / "history.csv").read_text() + "7,1,2\n")), 1, ["history.csv", "row"]),
    Case("report-data-truncated", report_on(truncate("report_data.npz", 100)), 1, ["report_data.npz"]),
    Case("report-data-wrong-shape", report_on(lambda f: np.savez(f / "report_data.npz", test_labels=np.zeros(3))), 1,
     ["report_data.npz", "missing the array"]),
    Case("report-summary-garbage", report_on(write("model_summary.json", '{"layers": [1, 2]}')), 1,
     ["model_summary.json"]),
    Case("report-confusion-garbage", report_on(edit_json("metrics.json", confusion_matrix=[[1, 2], [3]])), 1,
     ["confusion_matrix"]),
    Case("resume-single-machine-run-with-workers", resume_with_workers, 2,
     ["--workers", "drop --workers"], None),
]
