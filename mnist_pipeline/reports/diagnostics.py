"""Files of `mnist diagnose gradients`: gradients.json with every number, gradients.png comparing configurations."""

from __future__ import annotations

from pathlib import Path

from mnist_pipeline.reports import plots, run_folder


def write_gradient_report(results: dict[str, dict], out_dir: Path, steps: int) -> list[Path]:
    """`results`: label -> {"layers", "norms", "mean"} as returned by `diagnose.diagnose_gradients`."""
    run_folder.write_json(out_dir / "gradients.json", {"steps": steps, "configurations": results})
    plots.plot_gradient_norms({label: r["mean"] for label, r in results.items()},
                              {label: r["layers"] for label, r in results.items()}, out_dir / "gradients.png",
                              f"Gradient norm per layer, mean of the first {steps} training steps")
    return [out_dir / "gradients.json", out_dir / "gradients.png"]


def first_to_last_ratios(results: dict[str, dict]) -> dict[str, float]:
    """last-layer / first-layer mean gradient norm: >> 1 means the first layers barely learn (vanishing)."""
    return {label: r["mean"][-1] / r["mean"][0] if r["mean"][0] else float("inf") for label, r in results.items()}
