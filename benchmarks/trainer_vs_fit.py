"""Our custom-step trainer vs Keras `model.fit` (with TensorFlow's defaults, and with our settings) on the
identical model, data and batch size, each in its own process (so peak memory is that trainer's alone), the
trainers taking turns."""

from __future__ import annotations

import statistics

from benchmarks.processes import per_round, rates, take_turns
from benchmarks.train_worker import TRAINERS, run_worker

VARIANTS = [  # (model config, augmentation on?)
    ("mlp", False),
    ("mlp", True),
    ("cnn", False),
    ("cnn", True),
]


def run_variant(model: str, augment: bool, args) -> dict:
    """Each trainer measured in args.rounds processes, taking turns (the order rotates every round), so a slow
    spell of the VM falls on all of them alike; repeats pooled, peak memory the highest of any process."""
    repeats = per_round(args.repeats, args.rounds)
    runs = take_turns(TRAINERS, args.rounds, lambda trainer: run_worker(trainer, model, augment, repeats, args))
    pooled = {}
    for trainer, results in runs.items():
        pooled_rates = rates(results)
        pooled[trainer] = {**results[0], "images_per_second": pooled_rates, "median": statistics.median(pooled_rates),
                           "spread": [min(pooled_rates), max(pooled_rates)], "processes": len(results),
                           "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
                           "traces": None if trainer != "custom" else max(r["traces"] for r in results)}
    return pooled


def table_rows(results: list[dict], ceiling: float) -> list[dict]:
    """One row per variant: each trainer's median and spread, their ratios, and the share of the matmul
    `ceiling` (GFLOP/s) each reaches."""
    rows = []
    for pair in results:
        custom, fit, same = pair["custom"], pair["fit"], pair["fit-same"]
        flops = custom["train_flops_per_image"]
        rows.append({
            "model": custom["model"], "augmentation": custom["augment"], "batch": custom["batch_size"],
            "precision": custom["precision"],
            "steps/repeat": custom["steps_per_repeat"],
            "custom img/s": round(custom["median"]), "custom spread": [round(v) for v in custom["spread"]],
            "fit img/s": round(fit["median"]), "fit spread": [round(v) for v in fit["spread"]],
            "custom / fit": round(custom["median"] / fit["median"], 2),
            "fit-same img/s": round(same["median"]),
            "custom / fit-same": round(custom["median"] / same["median"], 2),
            "train MFLOP/img": round(flops / 1e6, 2),
            "custom % of ceiling": round(100 * custom["median"] * flops / (ceiling * 1e9), 1),
            "fit % of ceiling": round(100 * fit["median"] * flops / (ceiling * 1e9), 1),
            "custom peak MB": round(custom["peak_rss_mb"]), "fit peak MB": round(fit["peak_rss_mb"]),
            "custom / fit memory": round(custom["peak_rss_mb"] / fit["peak_rss_mb"], 2),
            "custom traces": custom["traces"],
        })
    return rows
