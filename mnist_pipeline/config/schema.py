"""The typed, frozen run configuration: its sections, their defaults and ranges, and the checks across fields.

A model's own parameters (`model.params`) are declared in `model_params`; the shared field types in `fields`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictInt, StrictStr, field_validator, model_validator

from mnist_pipeline.config.fields import Fraction, Number, Section
from mnist_pipeline.config.model_params import MODEL_PARAMS
from mnist_pipeline.shapes import NUM_CLASSES

# Run names become folder names: no separators, no leading dot, so they cannot leave the output dir.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

CLASS_NAMES = {
    "mnist": [str(digit) for digit in range(NUM_CLASSES)],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
}


class AugmentationConfig(Section):
    """Random warps of training images only (any model); validation and test images are never changed."""

    rotation: Annotated[Number, Field(ge=0.0, le=0.5)] = Field(
        0.0, description="max random rotation, fraction of a full turn (0.03 = +-11 deg; 0 = off)")
    translation: Annotated[Number, Field(ge=0.0, le=0.5)] = Field(
        0.0, description="max random shift, fraction of the image size (0.1 = +-2.8 px; 0 = off)")
    zoom: Annotated[Number, Field(ge=0.0, le=0.5)] = Field(
        0.0, description="max random zoom in or out, fraction (0 = off)")
    horizontal_flip: StrictBool = Field(False, description="random left-right mirroring (clothes, not digits)")
    erasing: Annotated[Number, Field(ge=0.0, le=1.0)] = Field(
        0.0, description="probability of blanking one random rectangle (2-40% of the image) per image (0 = off)")
    test_time_flip: StrictBool = Field(
        False, description="validate and test on the mean prediction of each image and its mirror image")


class DataConfig(Section):
    dataset: Literal["mnist", "fashion_mnist"] = Field("mnist", description="which dataset (sets class names)")
    data_dir: Annotated[StrictStr, Field(max_length=4096)] | None = Field(
        None, description="folder with IDX or .npz files; else $MNIST_DATA_DIR; else Keras's download cache"
    )
    normalization: Literal["scale", "standardize"] = Field(
        "scale", description="scale: pixels to [0, 1]; standardize: mean 0, std 1 from the training split")
    validation_split: Number = Field(0.1, gt=0.0, lt=1.0, description="stratified fraction held out to validate")
    subset: Annotated[StrictInt, Field(ge=10)] | None = Field(
        None, description="train on this many stratified training examples (null = all); validation and test "
                          "keep their full size, so results stay comparable"
    )
    augmentation: AugmentationConfig = Field(default_factory=AugmentationConfig)

    @field_validator("data_dir")
    @classmethod
    def _named(cls, folder: str | None) -> str | None:
        if folder is not None and not folder.strip():  # would quietly read $MNIST_DATA_DIR or download instead
            raise ValueError("an empty folder name; name the folder with the data, or leave data_dir out (null) to "
                             "read $MNIST_DATA_DIR or Keras's download")
        return folder


class ModelConfig(Section):
    name: StrictStr = Field("mlp", description="registry name: linear, mlp, deep_mlp or cnn")
    params: dict[str, Any] = Field(default_factory=dict, description="the model's arguments (`mnist models`)")
    init_from: Annotated[StrictStr, Field(min_length=1, max_length=4096)] | None = Field(
        None, description="a completed run folder of the same model whose weights training starts from "
                          "(fine-tuning; `mnist train --init-from RUN`); null = random weights")

    @field_validator("name")
    @classmethod
    def _known_name(cls, name: str) -> str:
        if name not in MODEL_PARAMS:
            raise ValueError(f"unknown model; known models: {', '.join(MODEL_PARAMS)}")
        return name


class ScheduleConfig(Section):
    name: Literal["constant", "step", "cosine", "reduce_on_plateau"] = Field(
        "constant", description="learning-rate schedule (cosine and warm-up move the rate every step)")
    step_size: Annotated[StrictInt, Field(ge=1)] = Field(10, description="step: epochs between decays")
    factor: Number = Field(0.1, gt=0.0, lt=1.0, description="step, reduce_on_plateau: multiply the rate by this")
    patience: Annotated[StrictInt, Field(ge=1)] = Field(
        3, description="reduce_on_plateau: epochs without a lower val_loss before reducing")
    min_learning_rate: Number = Field(0.0, ge=0.0, le=10.0, description="floor of every schedule; cosine ends there")
    warmup_epochs: Annotated[StrictInt, Field(ge=0)] = Field(
        0, description="epochs over which the rate rises linearly from 0 before the schedule starts")


class EarlyStoppingConfig(Section):
    enabled: StrictBool = Field(False, description="stop when the monitored value stops improving")
    monitor: Literal["val_loss", "val_accuracy"] = Field("val_loss", description="the value watched")
    patience: Annotated[StrictInt, Field(ge=1)] = Field(5, description="epochs without improvement before stopping")
    min_delta: Number = Field(0.0, ge=0.0, le=10.0, description="smallest change that counts as an improvement")


DEVICE_PATTERN = r"^(CPU|GPU):[0-9]{1,2}$"
DeviceName = Annotated[StrictStr, Field(pattern=DEVICE_PATTERN)]


class DistributeConfig(Section):
    """One run on several devices or machines, on tf.distribute; `batch_size` stays the global batch."""

    strategy: Literal["none", "mirrored", "multi_worker"] = Field(
        "none", description="none: one device; mirrored: MirroredStrategy over this machine's devices; "
                            "multi_worker: MultiWorkerMirroredStrategy over the machines TF_CONFIG (or --workers) "
                            "names")
    devices: tuple[DeviceName, ...] | None = Field(
        None, min_length=1, max_length=64,
        description="mirrored: the devices, e.g. [GPU:0, GPU:1]; [CPU:0, CPU:1] splits the CPU into logical "
                    "devices; null = every visible GPU")
    timeout_seconds: Annotated[StrictInt, Field(ge=1, le=86_400)] = Field(
        120, description="multi_worker: how long a step may wait for the other workers before the run fails "
                         "(a hung worker; a dead one is noticed at once)")
    startup_timeout_seconds: Annotated[StrictInt, Field(ge=1, le=86_400)] = Field(
        600, description="multi_worker: how long to wait for every worker to join before the run fails")

    @model_validator(mode="after")
    def _devices_fit_the_strategy(self):
        if self.devices is None:
            return self
        if self.strategy != "mirrored":
            raise ValueError(f"devices applies to strategy mirrored only (strategy is {self.strategy}); "
                             f"multi_worker trains on each worker's visible GPUs, or its CPU")
        if len(set(self.devices)) != len(self.devices):
            raise ValueError("devices names a device twice; name each once")
        if len({name.split(":")[0] for name in self.devices}) > 1:
            raise ValueError("devices mixes CPU and GPU devices; a mirrored run keeps one kind (the slowest "
                             "replica sets the pace of every step)")
        return self


class TrainingConfig(Section):
    epochs: Annotated[StrictInt, Field(ge=1, le=10_000)] = Field(10, description="how many epochs to train, at most")
    batch_size: Annotated[StrictInt, Field(ge=1, le=65_536)] = Field(128, description="global batch size")
    optimizer: Literal["adam", "sgd"] = Field("adam", description="adam, or sgd with momentum")
    learning_rate: Number = Field(1e-3, gt=0.0, le=10.0, description="initial learning rate")
    momentum: Fraction = Field(0.9, description="SGD momentum (ignored by adam)")
    weight_decay: Annotated[Number, Field(ge=0.0, le=1.0)] = Field(
        0.0, description="decoupled weight decay (AdamW / SGDW): each step shrinks every kernel by "
                         "learning_rate x weight_decay of itself; biases and batch norm are left alone (0 = off)")
    ema: Annotated[Number, Field(ge=0.0, lt=1.0)] = Field(
        0.0, description="momentum of an exponential moving average of the weights (e.g. 0.999: ~1,000 steps); "
                         "validation, the test and the saved model use the averaged weights (0 = off)")
    precise_batch_norm: Annotated[StrictInt, Field(ge=0, le=1_000_000)] = Field(
        2048, description="before each validation, recompute batch norm's statistics for the current weights "
                          "over this many training images (precise batch norm: Keras's moving averages trail "
                          "the weights on short runs); 0 = keep the moving averages")
    label_smoothing: Annotated[Number, Field(ge=0.0, le=0.5)] = Field(
        0.0, description="train toward (1 - s) on the true class plus s spread over all 10 (reported losses "
                         "stay plain cross-entropy)")
    device: Literal["auto", "cpu", "gpu"] = Field("auto", description="auto uses a GPU when TensorFlow sees one")
    seed: Annotated[StrictInt, Field(ge=0, le=2**31 - 1)] = Field(
        42, description="seeds Python, NumPy, TensorFlow, the split and the data order")
    jit_compile: StrictBool | Literal["auto"] = Field(
        "auto", description="compile the train steps with XLA. auto: on for dense models without batch norm "
                            "on runs of 2,000+ steps (shorter runs spend longer compiling than they gain), "
                            "off for the rest")
    steps_per_execution: Annotated[StrictInt, Field(ge=1, le=1000)] = Field(
        1, description="train steps per graph call (fewer Python round trips; progress, NaN checks and "
                       "stop requests then act once per group)")
    precision: Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"] = Field(
        "auto", description="compute dtype (Keras policy); variables, logits and loss stay float32. auto: "
                            "mixed_bfloat16 for the cnn where the device computes bfloat16 natively (CPUs with "
                            "AVX-512 BF16 or AMX, GPUs of compute capability 8.0+), else float32; a resumed run "
                            "keeps what it trained with. mixed_float16: GPU only, with loss scaling")
    mixed_precision: StrictBool = Field(
        False, description="older name for precision: mixed_float16 (kept so that earlier run configs load)")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    distribute: DistributeConfig = Field(default_factory=DistributeConfig)

    @model_validator(mode="after")
    def _devices_agree(self):
        devices = self.distribute.devices or ()
        if self.device == "cpu" and any(name.startswith("GPU") for name in devices):
            raise ValueError("device is cpu but distribute.devices names GPUs; set device to auto or gpu, or name "
                             "CPU devices")
        if self.device == "gpu" and any(name.startswith("CPU") for name in devices):
            raise ValueError("device is gpu but distribute.devices names CPU devices; name GPUs, or set device "
                             "to auto or cpu")
        if devices and self.batch_size % len(devices):
            raise ValueError(f"batch_size {self.batch_size} does not split evenly over {len(devices)} devices; "
                             f"use a multiple of {len(devices)} (the batch size is the global batch)")
        return self

    @model_validator(mode="after")
    def _one_precision(self):
        if self.mixed_precision and self.precision == "mixed_bfloat16":
            raise ValueError("mixed_precision = true (the older name for precision: mixed_float16) contradicts "
                             "precision = mixed_bfloat16; drop mixed_precision")
        return self

    @property
    def compute_precision(self) -> str:
        """The precision this config asks for (mixed_precision = true meaning mixed_float16); `auto` is
        resolved for the machine by `hardware.resolve_precision`."""
        return "mixed_float16" if self.mixed_precision else self.precision

    @model_validator(mode="after")
    def _warmup_within_training(self):
        if self.schedule.warmup_epochs >= self.epochs:
            raise ValueError(f"schedule.warmup_epochs ({self.schedule.warmup_epochs}) must be less than epochs "
                             f"({self.epochs}); shorten the warm-up")
        return self


class TensorBoardConfig(Section):
    """Event files in <run>/tensorboard/ (train, validation, test), named as Keras's TensorBoard callback does."""

    enabled: StrictBool = Field(True, description="write TensorBoard event files (`make tensorboard` shows them)")
    loss_every_steps: Annotated[StrictInt, Field(ge=0, le=1_000_000)] = Field(
        10, description="write the training loss of every N-th step as batch_loss (0 = off)")
    histograms_every_epochs: Annotated[StrictInt, Field(ge=0, le=10_000)] = Field(
        0, description="write histograms of every weight every N epochs (0 = off)")


class OutputConfig(Section):
    dir: Annotated[StrictStr, Field(min_length=1, max_length=4096)] = Field(
        "outputs", description="runs go to <dir>/runs/<UTC timestamp>-<name>/")
    name: StrictStr | None = Field(None, description="run name; defaults to the config file's name")
    tensorboard: TensorBoardConfig = Field(default_factory=TensorBoardConfig)
    corruptions: StrictBool = Field(
        False, description="after the test, score it under MNIST-C's corruptions too (robustness.json and a "
                           "report section; the same as `mnist evaluate RUN --corruptions`)")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str | None) -> str | None:
        if name is not None and not re.fullmatch(NAME_PATTERN, name):
            raise ValueError("a run name is 1-64 letters, digits, '_', '.' or '-', starting with a letter or "
                             "digit (no path separators)")
        return name


class RunConfig(Section):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    @property
    def run_name(self) -> str:
        return self.output.name or self.model.name

    def planned_training(self, examples: int) -> tuple[int, int]:
        """(epochs, training images) this config plans on a training file of `examples` images: its subset of
        them, else all, less the validation split. A run with fewer epochs or a smaller subset than its config
        as written trains less than its settings were tuned for."""
        train = examples - round(examples * self.data.validation_split)  # as `stratified_split` holds it out
        return self.training.epochs, min(self.data.subset, train) if self.data.subset else train

    def planned_steps(self, examples: int) -> int:
        """Optimizer steps of `planned_training`."""
        epochs, images = self.planned_training(examples)
        return epochs * max(images // self.training.batch_size, 1)
