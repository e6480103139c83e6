"""float32 vs mixed_bfloat16, and every shipped config as shipped (its `auto` settings) vs forced to float32:
our trainer, processes taking turns."""

from __future__ import annotations

import statistics

from benchmarks.processes import rates, spread
from benchmarks.train_worker import under_settings


def precision(model: str, args) -> dict:
    """float32 vs mixed_bfloat16."""
    settings = {p: (1, [f"training.precision={p}"]) for p in ("float32", "mixed_bfloat16")}
    measured = {name: rates(results) for name, results in under_settings(model, settings, args).items()}
    fp32, bf16 = statistics.median(measured["float32"]), statistics.median(measured["mixed_bfloat16"])
    return {"model": model, "float32 img/s": round(fp32), "bfloat16 img/s": round(bf16),
            "bfloat16 / float32": round(bf16 / fp32, 2), "float32 spread": spread(measured["float32"]),
            "bfloat16 spread": spread(measured["mixed_bfloat16"])}


def shipped_vs_float32(args) -> list[dict]:
    """Every shipped config with its shipped (auto) settings against the same config forced to float32, our
    trainer, taking turns: on a CPU without native bfloat16, `auto` must never choose the slower one."""
    rows = []
    for config in SHIPPED_CONFIGS:
        settings = {"shipped": (1, []), "float32": (1, ["training.precision=float32"])}
        results = under_settings(config, settings, args)
        measured = {name: rates(runs) for name, runs in results.items()}
        shipped, fp32 = statistics.median(measured["shipped"]), statistics.median(measured["float32"])
        resolved = results["shipped"][0]  # what the shipped settings resolved to on this machine
        rows.append({"config": config, "shipped precision": resolved["precision"], "jit": resolved["jit_compile"],
                     "shipped img/s": round(shipped), "float32 img/s": round(fp32),
                     "shipped / float32": round(shipped / fp32, 2), "shipped spread": spread(measured["shipped"]),
                     "float32 spread": spread(measured["float32"])})
    return rows


SHIPPED_CONFIGS = ["mlp", "deep_mlp", "cnn", "smoke", "mlp_fashion", "deep_mlp_fashion", "cnn_fashion_fast",
                   "cnn_fashion"]
