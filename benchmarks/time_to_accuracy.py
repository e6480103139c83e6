"""The race to 90% and 93% Fashion-MNIST test accuracy: the classic Keras CNN under `model.fit` against the
shipped config for each target under our trainer, one `race` process per racer."""

from __future__ import annotations

from benchmarks.processes import last_json, module, run_checked

# Each target test accuracy and the shipped config that races to it, as shipped (its own epochs and schedule).
RACES = {0.90: "cnn_fashion_fast", 0.93: "cnn_fashion"}


def race_process(racer: str, config: str, target: float, args) -> dict:
    command = module("race", "--racer", racer, "--config", config, "--data-dir", args.data_dir, "--target", str(target))
    return last_json(run_checked(command, "race failed"))


def race(args) -> list[dict]:
    """benchmarks/race.py, one process per racer: the classic Keras CNN once, up to the highest target (its
    per-epoch test accuracies give the time to each), and ours once per target with that target's config."""
    classic = race_process("classic", RACES[min(RACES)], max(RACES), args)
    races = []
    for target, config in RACES.items():
        ours = race_process("ours", config, target, args)
        reached = next((e for e in classic["epochs"] if e["test_accuracy"] >= target), None)
        theirs = {**classic, "seconds_to_target": reached["seconds"] if reached else None,
                  "epochs_to_target": reached["epoch"] if reached else None}
        seconds = ours["seconds_to_target"]
        # Never reached by the classic CNN: its whole run's time bounds the ratio from above.
        bound = theirs["seconds_to_target"] or classic["epochs"][-1]["seconds"]
        races.append({"target": target, "config": config, "racers": {"ours": ours, "classic": theirs},
                      "ours_over_classic": round(seconds / bound, 2) if seconds else None,
                      "classic_reached": reached is not None})
    return races
