
import pytest

from conftest import ROOT, RUN_CONFIGS
from mnist_pipeline.config import MODEL_PARAMS, RunConfig, load_config, parse_override, to_yaml
from mnist_pipeline.errors import ConfigError

ROOT_CONFIGS = ROOT / "configs"


def write(tmp_path, text, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def config_error(*args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert info.value.exit_code == 2
    return message


def test_defaults_fill_every_model_parameter():
    cfg = load_config(None)
    assert cfg.model.name == "mlp"
    assert set(cfg.model.params) == set(MODEL_PARAMS["mlp"].model_fields)
    assert cfg.training.epochs == 10
    assert cfg.data.validation_split == 0.1


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: str(p.relative_to(ROOT_CONFIGS)))
def test_every_shipped_config_loads_and_is_named_after_its_file(path):
    cfg = load_config(path)
    assert cfg.run_name == path.stem
    assert cfg.model.name in MODEL_PARAMS


def test_learning_rate_written_as_1e_minus_3_is_a_number(tmp_path):
    # PyYAML reads `1e-3` (no dot) as the string '1e-3'.
    cfg = load_config(write(tmp_path, "training:\n  learning_rate: 1e-3\n"))
    assert cfg.training.learning_rate == pytest.approx(0.001)
    assert isinstance(cfg.training.learning_rate, float)


def test_precedence_defaults_file_set_flags(tmp_path):
    path = write(tmp_path, "training:\n  epochs: 3\n  seed: 5\n")
    cfg = load_config(path, ["training.epochs=4", "training.seed=6"], {"training.seed": 7, "output.dir": None})
    assert (cfg.training.epochs, cfg.training.seed, cfg.output.dir) == (4, 7, "outputs")


def test_set_parses_yaml_scalars_and_lists(tmp_path):
    cfg = load_config(write(tmp_path, "model:\n  name: deep_mlp\n"),
                      ["model.params.units=[64, 32]", "model.params.batch_norm=true", "data.subset=100"])
    assert cfg.model.params["units"] == [64, 32]
    assert cfg.model.params["batch_norm"] is True
    assert cfg.data.subset == 100


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(RUN_CONFIGS[0], ["training.epochs=2"])
    again = load_config(write(tmp_path, to_yaml(cfg), name="config.yaml"))
    assert again == cfg  # re-running a saved config.yaml reproduces the run, name included


@pytest.mark.parametrize("overrides, words", [
    (["training.epochs=-1"], ["training.epochs", "-1", "must be at least 1"]),
    (["training.epochs=2.5"], ["training.epochs", "2.5", "integer"]),
    (["training.epochs=ten"], ["training.epochs", "'ten'", "integer"]),
    (["training.batch_size=true"], ["training.batch_size = true", "integer"]),  # YAML's true, not Python's True
    (["training.learning_rate=fast"], ["training.learning_rate", "'fast'", "number"]),
    (["training.learning_rate=0"], ["training.learning_rate", "must be more than 0"]),
    (["data.validation_split=1.5"], ["data.validation_split", "1.5", "must be less than 1"]),
    (["data.validation_split=0"], ["data.validation_split", "must be more than 0"]),
    (["data.dataset=cifar10"], ["data.dataset", "expected one of mnist, fashion_mnist"]),
    (["training.optimizer=adamw"], ["training.optimizer", "expected one of adam, sgd"]),
    (["training.device=tpu"], ["training.device", "expected one of auto, cpu, gpu"]),
    (["model.name=resnet"], ["model.name", "'resnet'", "known models: linear, mlp, deep_mlp, cnn"]),
    (["model.params.dropout_rate=1.0"], ["model.params.dropout_rate", "less than 1"]),
    (["model.params.activation=softmaxx"], ["model.params.activation", "expected one of relu, elu"]),
    (["model.params.units=0"], ["model.params.units", "must be at least 1"]),
    (["data.subset=3"], ["data.subset", "must be at least 10"]),
    (["output.name=../escape"], ["output.name", "no path separators"]),
    (["training.epoch=3"], ["unknown key 'training.epoch'", "did you mean 'epochs'", "allowed in training"]),
    (["model.params.unitz=3"], ["unknown key 'model.params.unitz'", "did you mean 'units'"]),
    (["trainin.epochs=3"], ["unknown key 'trainin'", "did you mean 'training'"]),
    # A key of a section given at the top level, or under another tool's name: its full key.
    (["epochs=3"], ["unknown key 'epochs'", "did you mean 'training.epochs'"]),
    (["rotation=0.1"], ["did you mean 'data.augmentation.rotation'"]),
    (["augmentation.zoom=0.1"], ["unknown key 'augmentation'", "did you mean 'data.augmentation'"]),
    (["training.lr=0.1"], ["unknown key 'training.lr'", "did you mean 'learning_rate'"]),
    (["weight_decay=0.1"], ["unknown key 'weight_decay'", "did you mean 'training.weight_decay'"]),
    (["training.wd=0.1"], ["unknown key 'training.wd'", "did you mean 'weight_decay'"]),
    # A key of another section under model.params: the training option, not a look-alike parameter (l2).
    (["model.params.weight_decay=0.1"], ["unknown key 'model.params.weight_decay'",
                                         "did you mean 'training.weight_decay'"]),
    # Types in YAML's words, not Python's ("input should be a valid tuple").
    (["model.params.units=abc", "model.name=deep_mlp"], ["model.params.units = 'abc'", "expected a list of integers"]),
    (["model.params.units=[64,x]", "model.name=deep_mlp"], ["model.params.units[1] = 'x'", "expected an integer"]),
    (["data.subset=many"], ["data.subset = 'many'", "expected an integer or null"]),
    (["training.jit_compile=maybe"], ["training.jit_compile = 'maybe'", "expected true, false or auto"]),
    (["training=fast"], ["training = 'fast'", "expected a section (key: value lines)"]),
])
def test_bad_values_name_field_value_and_what_is_allowed(overrides, words):
    message = config_error(None, overrides)
    for word in words:
        assert word in message, message
    assert "(from the command line)" in message
    assert "valid tuple" not in message
    assert "more problem" not in message


def test_errors_in_a_file_name_the_file(tmp_path):
    path = write(tmp_path, "training:\n  epochs: 0\n")
    assert config_error(path).startswith(f"{path}: training.epochs = 0")


@pytest.mark.parametrize("text, words", [
    ("training: [1, 2\n", ["invalid YAML", "line"]),
    ("- a\n- b\n", ["must be a mapping"]),
    ("training: !!python/object/apply:os.system ['true']\n", ["YAML tag not allowed"]),
    ("training: 5\n", ["training = 5", "expected a section (key: value lines)"]),
])
def test_unreadable_or_unsafe_files(tmp_path, text, words):
    message = config_error(write(tmp_path, text))
    for word in words:
        assert word in message, message


def test_missing_file(tmp_path):
    assert "not found" in config_error(tmp_path / "nope.yaml")


@pytest.mark.parametrize("item", ["training.epochs", "=3", "training..epochs=3", "x.y=[1,"])
def test_malformed_set(item):
    with pytest.raises(ConfigError, match="--set"):
        parse_override(item)


def test_set_into_a_value_that_is_not_a_section(tmp_path):
    path = write(tmp_path, "training:\n  epochs: 3\n")
    assert "training.epochs is not a section" in config_error(path, ["training.epochs.x=1"])


def test_config_is_frozen():
    cfg = RunConfig()
    with pytest.raises(Exception, match="frozen"):
        cfg.training.epochs = 3


def test_convs_per_block_takes_one_count_or_one_per_block():
    cfg = load_config(None, ["model.name=cnn", "model.params.filters=[8, 16]", "model.params.convs_per_block=[1, 2]"])
    assert cfg.model.params["convs_per_block"] == [1, 2]
    with pytest.raises(ConfigError, match=r"model.params: convs_per_block lists 3 counts for 2 blocks"):
        load_config(None, ["model.name=cnn", "model.params.filters=[8, 16]", "model.params.convs_per_block=[1,2,3]"])


def test_warm_up_must_end_before_training_does():
    cfg = load_config(None, ["training.epochs=3", "training.schedule.warmup_epochs=2"])
    assert cfg.training.schedule.warmup_epochs == 2
    with pytest.raises(ConfigError, match=r"training: schedule.warmup_epochs \(3\) must be less than epochs \(3\)"):
        load_config(None, ["training.epochs=3", "training.schedule.warmup_epochs=3"])


def test_valid_padding_that_shrinks_the_image_away_is_a_config_error():
    cfg = load_config(None, ["model.name=cnn", "model.params.padding=valid", "model.params.filters=[8, 16]"])
    assert cfg.model.params["padding"] == "valid"
    # 28 -(2 convs)-> 24 -> 12 -> 8 -> 4 -> 0: block 3 has nothing left to pool
    with pytest.raises(ConfigError, match=r"shrinks to 0x0 before pooling in block 3 with padding 'valid'"):
        load_config(None, ["model.name=cnn", "model.params.padding=valid", "model.params.filters=[8, 16, 32]"])


def test_precision_names_the_policy_and_the_older_flag_still_loads():
    assert load_config(None).training.compute_precision == "auto"  # resolved per machine: tests/test_hardware.py
    assert load_config(None, ["training.precision=mixed_bfloat16"]).training.compute_precision == "mixed_bfloat16"
    older = load_config(None, ["training.mixed_precision=true"])  # an earlier run's config.yaml
    assert older.training.compute_precision == "mixed_float16"
    message = config_error(None, ["training.mixed_precision=true", "training.precision=mixed_bfloat16"])
    assert "contradicts precision = mixed_bfloat16" in message
    expected = "expected one of auto, float32, mixed_bfloat16, mixed_float16"
    assert expected in config_error(None, ["training.precision=fp8"])


def test_weight_decay_and_ema_are_checked_fractions():
    cfg = load_config(None, ["training.weight_decay=0.05", "training.ema=0.999"])
    assert (cfg.training.weight_decay, cfg.training.ema) == (0.05, 0.999)
    assert "training.ema" in config_error(None, ["training.ema=1"])
    assert "training.weight_decay" in config_error(None, ["training.weight_decay=-0.1"])


def test_a_config_builds_on_its_base_and_says_only_how_it_differs(tmp_path):
    (tmp_path / "lesson").mkdir()
    write(tmp_path, "data: {subset: 500, augmentation: {rotation: 0.05, zoom: 0.1}}\n"
                    "model: {name: deep_mlp, params: {units: [64, 32], dropout_rate: 0.1}}\n"
                    "training: {epochs: 7, learning_rate: 3e-3}\n", "base.yaml")
    write(tmp_path, "base: ../base.yaml\nmodel: {params: {l2: 1e-4}}\ndata: {augmentation: {zoom: 0.0}}\n",
          "lesson/l2.yaml")
    cfg = load_config(tmp_path / "lesson" / "l2.yaml", ["training.epochs=3"])
    assert cfg.model.params["units"] == [64, 32]
    assert cfg.model.params["dropout_rate"] == 0.1
    assert cfg.model.params["l2"] == 1e-4  # its own value
    assert (cfg.data.augmentation.rotation, cfg.data.augmentation.zoom) == (0.05, 0.0)  # merged key by key
    assert cfg.data.subset == 500
    assert cfg.training.learning_rate == 3e-3
    assert cfg.training.epochs == 3  # --set still wins over both files
    assert cfg.run_name == "l2"  # named after the file itself, not its base
    assert "base" not in to_yaml(cfg)  # the saved config is whole: it needs no other file


def test_bases_chain_and_another_model_does_not_inherit_the_base_models_params(tmp_path):
    write(tmp_path, "model: {name: mlp, params: {units: 300, activation: tanh}}\ntraining: {epochs: 4}\n", "a.yaml")
    write(tmp_path, "base: a.yaml\ntraining: {batch_size: 32}\n", "b.yaml")
    write(tmp_path, "base: b.yaml\nmodel: {name: linear}\n", "c.yaml")
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.model.name == "linear"  # not an unknown-key error
    assert "units" not in cfg.model.params
    assert (cfg.training.epochs, cfg.training.batch_size) == (4, 32)


@pytest.mark.parametrize(("files", "words"), [
    ({"x.yaml": "base: missing.yaml\n"}, ["x.yaml", "base 'missing.yaml'", "does not exist", "relative to"]),
    ({"x.yaml": "base: 3\n"}, ["x.yaml", "base must name another config file", "got 3"]),
    ({"x.yaml": "base: ''\n"}, ["x.yaml", "base must name another config file"]),
    ({"x.yaml": "base: x.yaml\n"}, ["base 'x.yaml' leads back to x.yaml"]),
    ({"x.yaml": "base: y.yaml\n", "y.yaml": "base: x.yaml\n"}, ["y.yaml: base 'x.yaml' leads back to x.yaml"]),
    ({"x.yaml": "base: sub\n", "sub/a.yaml": "{}"}, ["base 'sub'", "is a folder"]),
    ({"x.yaml": "base: y.yaml\n", "y.yaml": "- a list\n"}, ["y.yaml: a config file must be a mapping"]),
    ({"x.yaml": "base: y.yaml\n", "y.yaml": "training: {epochs: -1}\n"}, ["training.epochs"]),
])
def test_bad_bases_are_one_line_config_errors(tmp_path, files, words):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    message = config_error(tmp_path / "x.yaml")
    assert all(word in message for word in words), message


def test_a_chain_of_bases_is_bounded(tmp_path):
    for i in range(12):
        write(tmp_path, f"base: c{i + 1}.yaml\n", f"c{i}.yaml")
    write(tmp_path, "{}", "c12.yaml")
    assert "more than 8 configs deep" in config_error(tmp_path / "c0.yaml")
    assert load_config(tmp_path / "c6.yaml").run_name == "c6"  # 7 deep: fine
