"""`mnist sweep`: trials of one base config over a search space, on an Optuna study.

Optuna owns the sampling, the pruning and the study's storage, from which any number of processes on any number
of machines pull trials. Each trial is an ordinary run folder under the sweep's folder, trained by
`pipeline.run` without its test split: trials are chosen on validation only, and the sweep tests its best
trial once, at the end. `setup` reads and checks what the command line asks for (`sweep_file` reads sweep.json
back, `trainable` checks this machine), `optuna_study` keeps the study, `trials` runs them, `report` ranks
them. Optuna and TensorFlow load only inside the functions that need them.
"""

from mnist_pipeline.sweep.labels import short_labels, show_value
from mnist_pipeline.sweep.optuna_study import counted_trials, failure_summary, open_study, requeue_dead_trials
from mnist_pipeline.sweep.report import savings_text, write_report
from mnist_pipeline.sweep.setup import Sweep, make_sweep, record_sweep, reopen_sweep
from mnist_pipeline.sweep.trials import work

__all__ = ["Sweep", "counted_trials", "failure_summary", "make_sweep", "open_study",
           "record_sweep", "reopen_sweep", "requeue_dead_trials", "savings_text", "short_labels", "show_value",
           "work", "write_report"]
