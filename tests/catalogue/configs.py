"""Configs, flags, worker addresses, TF_CONFIG, config bases and the commands that read only them (compare,
config, diagnose): refused before TensorFlow loads or any folder is made, most with exit 2."""

from __future__ import annotations

import json

from catalogue import TINY, Case
from conftest import CNN, MLP


def train_yaml(text: str | bytes):
    def make(tmp, data, completed, resumable, diverged):
        path = tmp / "c.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["train", "--config", path, "--data-dir", data, "--output-dir", tmp / "out"], None
    return make


def train(*args, config=MLP):
    def make(tmp, data, completed, resumable, diverged):
        return ["train", "--config", config, "--data-dir", data, "--output-dir", tmp / "out", *args], None
    return make




BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(c + 1)}: &{chr(c + 1)} [{', '.join(['*' + chr(c)] * 10)}]\n" for c in range(ord("a"), ord("i"))
) + "training: {epochs: 1}\nmodel: {name: mlp, params: {units: *i}}\n"

def workers(value: str, *extra):
    def make(tmp, data, *_):
        return ["train", "--config", MLP, "--data-dir", data, "--output-dir", tmp / "out", "--workers", value,
                "--worker-index", "0", *TINY, *extra], None, None
    return make


def tf_config(text: str):
    def make(tmp, data, *_):
        return ["train", "--config", MLP, "--data-dir", data, "--output-dir", tmp / "out", *TINY], None, \
            {"TF_CONFIG": text}
    return make




def config_files(files: dict[str, str], top: str, command: str = "validate"):
    """`mnist config COMMAND top` in a folder of `files` (name -> text; text starting '->' makes a symlink)."""
    def make(tmp, *_):
        for name, text in files.items():
            if text.startswith("->"):
                (tmp / name).symlink_to(text[2:].strip())
            else:
                (tmp / name).write_text(text)
        return ["config", command, tmp / top], None, None
    return make




CASES = [
    # -- configs and flags (exit 2, no TensorFlow) --
    Case("yaml-billion-laughs", train_yaml(BILLION_LAUGHS), 2, ["alias bomb"]),
    Case("yaml-deep-nesting", train_yaml("training: " + "[" * 50_000 + "]" * 50_000 + "\n"), 2, ["nested more than"]),
    Case("yaml-huge-file", train_yaml("# padding\n" * 40_000), 2, ["larger than 256 KiB"]),
    Case("yaml-huge-integer", train_yaml("training: {epochs: " + "9" * 6000 + "}\n"), 2, ["cannot be read"]),
    Case("yaml-long-value-quoted-short", train_yaml("output: {name: " + "x" * 100_000 + "}\n"), 2,
     ["output.name", "100,002 characters"]),
    Case("yaml-long-unknown-key", train_yaml("training: {" + "k" * 1000 + ": 1}\n"), 2, ["unknown key", "characters"]),
    Case("yaml-not-utf8", train_yaml(b"training:\n  epochs: \xff\xfe\n"), 2, ["UTF-8"]),
    Case("config-base-missing", train_yaml("base: nope.yaml\n"), 2, ["base 'nope.yaml'", "does not exist"]),
    Case("config-base-itself", train_yaml("base: c.yaml\n"), 2, ["leads back to c.yaml"]),
    Case("config-base-device", train_yaml("base: /dev/zero\n"), 2, ["base '/dev/zero'", "not a regular file"]),
    Case("config-base-folder", train_yaml("base: .\n"), 2, ["is a folder"]),
    Case("config-base-not-a-config", train_yaml("base: /etc/hostname\n"), 2, ["must be a mapping"]),
    Case("config-base-list", train_yaml("base: [a.yaml, b.yaml]\n"), 2, ["base must name another config file"]),
    Case("yaml-python-tag", train_yaml("training: !!python/object/apply:os.system ['true']\n"), 2, ["tag not allowed"]),
    Case("yaml-recursive-alias", train_yaml("model: &m {name: mlp, params: *m}\n"), 2, []),
    Case("config-is-a-folder", lambda tmp, *_: (["train", "--config", tmp], None), 2, ["is a directory"]),
    Case("config-is-a-device", lambda tmp, *_: (["train", "--config", "/dev/zero"], None), 2, ["not a YAML file"]),
    Case("set-huge-value", train("--set", "training.epochs=" + "9" * 50_000), 2, ["characters"]),
    Case("set-long-key", train("--set", "training." + "e" * 20_000 + "=1"), 2, ["unknown key"]),
    Case("lr-inf", train("--set", "training.learning_rate=.inf"), 2, ["learning_rate", "finite"]),
    Case("lr-nan", train("--set", "training.learning_rate=.nan"), 2, ["learning_rate", "finite"]),
    Case("l2-inf", train("--set", "model.params.l2=1e999"), 2, ["model.params.l2", "finite"]),
    Case("min-delta-inf", train("--set", "training.early_stopping.min_delta=.inf"), 2, ["min_delta"]),
    Case("units-too-wide", train("--set", "model.params.units=10000000"), 2, ["model.params.units", "16384"]),
    Case("deep-mlp-memory", train("--set", "model.name=deep_mlp", "--set",
                              "model.params.units=[16384,16384,16384,16384]",
                              "--set", "training.batch_size=65536"), 2, ["GiB to train", "16 GiB allowed"]),
    Case("cnn-memory", train("--set", "model.params.filters=[2048,2048]", "--set", "training.batch_size=8192",
                         config=CNN),
     2, ["GiB to train"]),
    Case("epochs-too-many", train("--epochs", "1000000"), 2, ["training.epochs"]),
    Case("data-dir-long", train("--data-dir", "/nowhere/" + "d" * 3000), 2, ["characters", "does not exist"]),
    Case("mixed-precision-on-cpu", train("--set", "training.mixed_precision=true", *TINY), 2, ["needs a GPU"]),
    Case("float16-precision-on-cpu", train("--set", "training.precision=mixed_float16", *TINY), 2,
     ["training.precision = mixed_float16 needs a GPU", "training.precision: auto on a CPU"]),
    Case("precision-contradiction", train("--set", "training.precision=mixed_bfloat16", "--set",
                                      "training.mixed_precision=true", *TINY), 2, ["contradicts"]),
    # -- tf.distribute settings and flags (refused before any folder exists) --
    Case("distribute-devices-without-mirrored", train("--set", "training.distribute.devices=[CPU:0,CPU:1]"), 2,
     ["training.distribute", "mirrored only"]),
    Case("distribute-uneven-batch", train("--set", "training.distribute.strategy=mirrored", "--set",
                                      "training.distribute.devices=[CPU:0,CPU:1,CPU:2]"), 2,
     ["does not split evenly over 3 devices"]),
    Case("distribute-device-name", train("--set", "training.distribute.strategy=mirrored", "--set",
                                     "training.distribute.devices=[cpu0]"), 2, ["training.distribute.devices"]),
    Case("distribute-mirrored-without-gpu", train("--set", "training.distribute.strategy=mirrored", *TINY), 1,
     ["sees no GPU", "CPU:0,CPU:1"]),
    Case("distribute-multi-worker-alone", train("--set", "training.distribute.strategy=multi_worker"), 2,
     ["needs the list of workers", "--workers"]),
    Case("workers-not-addresses", train("--workers", "node1;rm -rf /", "--worker-index", "0"), 2, ["host:port"]),
    Case("workers-index-outside", train("--workers", "a:1,b:2", "--worker-index", "2"), 2, ["0 to 1"]),
    Case("worker-index-alone", train("--worker-index", "1"), 2, ["needs --workers"]),
    # -- TensorBoard settings --
    Case("tensorboard-negative-every", train("--set", "output.tensorboard.loss_every_steps=-1"), 2,
     ["output.tensorboard.loss_every_steps", "must be at least 0"]),
    Case("tensorboard-unknown-key", train("--set", "output.tensorboard.histogram_freq=1"), 2,
     ["unknown key", "histograms_every_epochs"]),
    # -- compare, config, diagnose --
    Case("compare-missing-folder", lambda tmp, *_: (["compare", tmp / "nope"], None), 2, ["no such run folder"]),
    Case("compare-all-and-folders", lambda tmp, *_: (["compare", "--all", tmp], None), 2, ["RUN_DIR... or --all"]),
    Case("compare-nothing-there", lambda tmp, *_: (["compare", "--output-dir", tmp / "empty"], None), 2,
     ["no runs to compare: none under", "train one"]),
    Case("set-key-of-a-section-at-top", lambda tmp, *_: (["train", "--set", "epochs=3"], None), 2,
     ["unknown key 'epochs'", "did you mean 'training.epochs'"]),
    Case("set-list-of-integers-wrong", lambda tmp, *_: (["train", "--config", MLP, "--set", "model.name=cnn", "--set",
                                                     "model.params.filters=abc"], None), 2,
     ["model.params.filters = 'abc'", "expected a list of integers"]),
    Case("config-validate-bomb", lambda tmp, *_: ((tmp / "b.yaml").write_text(BILLION_LAUGHS) and
                                              ["config", "validate", tmp / "b.yaml"], None), 2, ["alias bomb"]),
    Case("config-show-set-bomb", lambda tmp, *_: (["config", "show", MLP, "--set", "model.params.units=" +
                                               "[" * 10_000 + "]" * 10_000], None), 2, ["nested more than"]),
    Case("diagnose-bad-compare", lambda tmp, *_: (["diagnose", "gradients", "--config", MLP, "--compare", "oops"],
                                                  None),
     2, ["--compare expects"]),
    # -- worker addresses (refused before TensorFlow or any folder) --
    Case("workers-port-too-high", workers("localhost:70000,localhost:2901"), 2, ["'localhost:70000'", "1 to 65535"],
     None),
    Case("workers-port-65536", workers("a:2900,b:65536"), 2, ["1 to 65535"], None),
    Case("workers-port-zero", workers("a:0,b:2900"), 2, ["1 to 65535"], None),
    Case("workers-port-not-digits", workers("a:29e3,b:2900"), 2, ["1 to 65535"], None),
    Case("workers-port-signed", workers("a:+2900,b:2901"), 2, ["1 to 65535"], None),
    Case("workers-port-missing", workers("a:,b:2900"), 2, ["1 to 65535"], None),
    Case("workers-host-missing", workers(":2900,b:2901"), 2, ["is not host:port"], None),
    Case("workers-same-port-other-spelling", workers("localhost:2900,localhost:02900"), 2,
     ["lists an address twice", "'localhost:02900'"], None),
    Case("workers-same-host-other-case", workers("Node1:2900,node1:2900"), 2, ["lists an address twice"], None),
    Case("workers-ipv6-unbracketed", workers("::1:2900,::1:2901"), 2, ["in brackets", "[::1]:2900"], None),
    Case("workers-empty-entry", workers("a:2900,,b:2901"), 2, ["an empty entry"], None),
    Case("workers-only-commas", workers(",,"), 2, ["an empty entry"], None),
    Case("tf-config-deeply-nested", tf_config("[" * 50_000), 2, ["TF_CONFIG is not a cluster description"], None),
    Case("tf-config-nested-in-cluster", tf_config('{"cluster": {"worker": ' + "[" * 30_000 + "]" * 30_000 + "}}"), 2,
     ["TF_CONFIG is not a cluster description"], None),
    Case("tf-config-huge", tf_config(json.dumps({"cluster": {"worker": ["a:1"]}, "pad": "x" * 100_000})), 2,
     ["TF_CONFIG is 100,0", "64 KiB at most"], None),
    Case("tf-config-bad-port", tf_config(json.dumps({"cluster": {"worker": ["a:99999", "b:2"]},
                                                 "task": {"type": "worker", "index": 0}})), 2,
     ["TF_CONFIG", "1 to 65535"], None),
    Case("tf-config-duplicate", tf_config(json.dumps({"cluster": {"chief": ["a:2900"], "worker": ["A:02900"]},
                                                  "task": {"type": "chief", "index": 0}})), 2,
     ["TF_CONFIG lists an address twice"], None),
    # -- config bases --
    Case("base-nul-byte", config_files({"c.yaml": 'base: "mlp\\0.yaml"\n'}, "c.yaml"), 2, ["NUL character"], None),
    Case("base-symlink-loop", config_files({"l1": "-> l2", "l2": "-> l1", "c.yaml": "base: l1\n"}, "c.yaml"), 2,
     ["base 'l1' cannot be followed", "symlink loop"], None),
    Case("base-symlink-to-itself", config_files({"self.yaml": "-> self.yaml", "c.yaml": "base: self.yaml\n"}, "c.yaml"),
     2, ["cannot be followed"], None),
    Case("base-same-default-model-keeps-params",
     config_files({"base.yaml": "model:\n  params:\n    units: 48\n    dropout_rate: 0.3\n",
                   "c.yaml": "base: base.yaml\nmodel:\n  name: mlp\n"}, "c.yaml", "show"), 0,
     ["dropout_rate: 0.3", "units: 48"], None),
    Case("base-other-model-drops-params",
     config_files({"base.yaml": "model:\n  params:\n    units: 48\n",
                   "c.yaml": "base: base.yaml\nmodel:\n  name: cnn\n"}, "c.yaml", "show"), 0, ["name: cnn"], None),
]
