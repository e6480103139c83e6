"""metrics.json as one typed value: what training measured, what the test measured, and the run's facts.

Plain numbers only (no TensorFlow), so the file's keys are declared here once. `RunMetrics.to_dict` gives
them in the order metrics.json has always listed them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class TestMetrics:
    """The test split's numbers; absent from a run that is not tested (a sweep's trial)."""

    test_loss: float
    test_accuracy: float
    unsure_below: float  # confidence below which validation answers were right less than 90% of the time
    per_class: list  # reports.metrics.per_class_table
    confusion_matrix: list[list[int]]
    calibration: dict  # calibration.Calibration.to_dict(): the temperature and the test split's scores


@dataclass(frozen=True)
class RunFacts:
    """What the chief records about the run as a whole, once its files are written."""

    wall_seconds: float
    device: str
    cpu: str
    deterministic: bool
    seed: int
    dataset: str
    data_source: str
    split_sizes: dict[str, int]
    train_class_counts: list[int]
    made_by: dict[str, Any]
    versions: dict[str, str]
    continued_from: dict | None  # where the weights came from besides the run's own epochs
    init_from: dict | None
    mixed_precision: bool
    precision: str
    precision_choice: dict[str, str]
    budget: dict[str, Any] | None
    resumed: bool
    started: str
    finished: str


@dataclass(frozen=True)
class RunMetrics:
    """A run's metrics: training's on every worker of a cluster, `test` when tested, `facts` on the chief."""

    tested: bool
    best_epoch: int
    best_val_loss: float
    best_val_accuracy: float
    epochs: int
    stopped_early: bool
    parameters: int
    train_seconds: float
    model: str
    traces: dict[str, int]  # 1 each for the compiled functions used: no retracing
    batches: str  # where training batches were made (data.datasets placement)
    jit_compile: bool
    jit_compile_reason: str
    replicas: int
    distribute: dict[str, Any]
    weights_sha256: str  # the same on every worker of a cluster
    first_step_at: float | None  # Unix time the first group of steps ended; None when resumed done
    test: TestMetrics | None = None
    facts: RunFacts | None = None

    def with_facts(self, facts: RunFacts) -> RunMetrics:
        return replace(self, facts=facts)

    def to_dict(self) -> dict[str, Any]:
        """The keys of metrics.json, in its order: test_loss, test_accuracy and unsure_below first (tested runs
        only), then training's, then per_class, confusion_matrix and calibration (tested), then the run's facts
        (chief)."""
        training = {key: value for key, value in asdict(self).items() if key not in ("test", "facts")}
        test = asdict(self.test) if self.test else {}
        confusion = {key: test.pop(key) for key in ("per_class", "confusion_matrix", "calibration")} if test else {}
        return {**test, **training, **confusion, **(asdict(self.facts) if self.facts else {})}
