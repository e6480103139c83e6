"""The report's trust sections: calibration (with the reliability diagram), robustness under MNIST-C's
corruptions, and saliency maps of the most confident mistakes. Plain numbers in, no TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnist_pipeline.calibration import apply_temperature, reliability, scores
from mnist_pipeline.reports import plots, run_folder
from mnist_pipeline.reports.sections import Section
from mnist_pipeline.saliency import TOLERANCE

SALIENCY_SHOWN = 10  # mistakes with their maps: two rows of ten panels stay readable


def calibration_section(metrics: dict) -> Section | None:
    calibration = metrics.get("calibration")
    if not isinstance(calibration, dict):
        return None
    before, after = calibration["test_before"], calibration["test_after"]
    rows = [[label, fmt(before[key]), fmt(after[key])] for label, key, fmt in (
        ("accuracy", "accuracy", lambda v: f"{v:.4f}"), ("ECE (15 bins)", "ece", lambda v: f"{v:.2%}"),
        ("MCE", "mce", lambda v: f"{v:.2%}"), ("NLL", "nll", lambda v: f"{v:.4f}"),
        ("Brier score", "brier", lambda v: f"{v:.4f}"))]
    text = (f"Does \"97% sure\" mean right 97% of the time? Test split, before and after temperature scaling: "
            f"the logits divided by T = {calibration['temperature']:.3f}, fitted on the validation split (its NLL "
            f"{calibration['val_nll_before']:.4f} -> {calibration['val_nll_after']:.4f}). A temperature never "
            f"changes which class is most likely, so accuracy is the same. `mnist predict`, `evaluate`, "
            f"`ensemble` and `export` apply it unless given `--no-temperature`. ECE is the confidence gap "
            f"weighted over 15 equal-width bins, MCE the worst bin's gap (Guo et al. 2017).")
    return Section("Calibration", text=text, columns=["", "before", f"after (T = {calibration['temperature']:.2f})"],
                   rows=rows)


def draw_reliability(run_dir: Path, metrics: dict, data: dict | None, title: str) -> tuple[str, str] | None:
    calibration = metrics.get("calibration")
    if not isinstance(calibration, dict) or data is None or not len(data["test_labels"]):
        return None
    probabilities, labels = data["test_probabilities"], data["test_labels"]
    temperature = float(calibration["temperature"])
    plt = plots.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), constrained_layout=True)
    for ax, p, name in ((axes[0], probabilities, "before"),
                        (axes[1], apply_temperature(probabilities, temperature), f"after T = {temperature:.2f}")):
        table = reliability(p, labels)
        centres = (table.edges[:-1] + table.edges[1:]) / 2
        filled = table.counts > 0
        width = table.edges[1] - table.edges[0]
        ax.bar(centres[filled], table.accuracy[filled], width=width * 0.95, color="#4c72b0", label="accuracy")
        low = np.minimum(table.accuracy[filled], table.confidence[filled])
        ax.bar(centres[filled], np.abs(table.confidence[filled] - table.accuracy[filled]), bottom=low,
               width=width * 0.95, fill=False, edgecolor="#c44e52", hatch="///", linewidth=0.8,
               label="gap to the bin's mean confidence")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top probability)", ylabel="accuracy",
               title=f"{name}: ECE {scores(p, labels).ece:.2%}")
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"Reliability diagram, test split: {title}")
    plots.save_figure(plt, fig, run_dir / run_folder.RELIABILITY)
    return ("Reliability diagram", "Test answers grouped by confidence in 15 bins: how often each bin was right "
            "(blue) against its mean confidence (the other end of the hatched gap). Bars below the diagonal are "
            "overconfident, above it underconfident. Empty bins are not drawn.")


def robustness_section(robustness: dict | None) -> Section | None:
    if robustness is None:
        return None
    rows = [["clean", "", f"{robustness['clean']['accuracy']:.4f}", f"{robustness['clean']['ece']:.2%}"]]
    rows += [[r["name"], "" if r["severity"] is None else str(r["severity"]), f"{r['accuracy']:.4f}",
              f"{r['ece']:.2%}"] for r in robustness["corruptions"]]
    rows.append([f"mean of {len(robustness['corruptions'])}", "", f"{robustness['mean_accuracy']:.4f}",
                 f"{robustness['mean_ece']:.2%}"])
    temperature = ("after temperature scaling" if robustness.get("calibrated") and robustness.get("temperature") != 1
                   else "without temperature scaling")
    text = (f"The test split ({robustness['examples']:,} images, {robustness.get('data_source', '?')}) under each "
            f"MNIST-C corruption (Mu and Gilmer 2019) at its dataset's severity, generated from seed "
            f"{robustness['seed']} (every run scored with one seed sees the same images). ECE {temperature}. "
            f"Scored {robustness.get('scored_at', '?')} by `mnist evaluate --corruptions` or output.corruptions.")
    return Section("Robustness under corruptions", text=text, columns=["corruption", "severity", "accuracy", "ECE"],
                   rows=rows)


def draw_corruptions(run_dir: Path, robustness: dict | None, title: str) -> tuple[str, str] | None:
    if robustness is None:
        return None
    examples = robustness["example_images"]
    accuracy = {r["name"]: r["accuracy"] for r in robustness["corruptions"]}
    names = ["clean", *accuracy]
    images = np.asarray([examples[name] for name in names], np.float32) / 255
    titles = [f"clean\n{robustness['clean']['accuracy']:.3f}",
              *(f"{name.replace('_', ' ')}\n{accuracy[name]:.3f}" for name in accuracy)]
    plots.plot_image_grid(images, titles, run_dir / run_folder.CORRUPTIONS,
                          f"One test image under each corruption, with the test accuracy: {title}", columns=8)
    return ("Corruptions", f"Test image {robustness['example_index']} as each corruption changes it, and the "
            f"model's accuracy on the whole test split so corrupted.")


def draw_saliency(run_dir: Path, data: dict | None, names: list[str], title: str) -> tuple[str, str] | None:
    if data is None or "mistake_saliency" not in data or not len(data["mistake_saliency"]):
        return None
    shown = min(SALIENCY_SHOWN, len(data["mistake_saliency"]))
    labels, probabilities = data["test_labels"], data["test_probabilities"]
    plt = plots.pyplot()
    # At least 6 inches wide: one mistake's pair alone would be a thumbnail with an unreadable title.
    fig, axes = plt.subplots(2, shown, figsize=(max(1.45 * shown, 6.0), 3.6), squeeze=False)
    for column in range(shown):
        index = data["mistake_indices"][column]
        attribution = data["mistake_saliency"][column]
        limit = float(np.abs(attribution).max()) or 1.0
        top, bottom = axes[0, column], axes[1, column]
        top.imshow(data["mistake_images"][column], cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        top.set_title(f"true {names[labels[index]]}\npred {names[probabilities[index].argmax()]}", fontsize=8)
        bottom.imshow(attribution, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        for ax in (top, bottom):
            ax.set_xticks([])
            ax.set_yticks([])
    axes[1, 0].set_ylabel("toward the\nwrong class", fontsize=8)
    fig.suptitle(f"Why it erred, the most confident mistakes: {title}", fontsize=10)
    fig.tight_layout()
    plots.save_figure(plt, fig, run_dir / run_folder.SALIENCY)
    error = float(np.max(data["saliency_error"] / np.maximum(np.abs(data["saliency_difference"]), 1.0)))
    met = (f"within {error:.2%} of it, inside the {TOLERANCE:.0%} asked for" if error <= TOLERANCE else
           f"within {error:.2%} of it: {int(data['saliency_steps'])} steps, the most taken, did not reach the "
           f"{TOLERANCE:.0%} asked for (ReLU and max-pooling kinks along the path)")
    return ("Why it erred", f"Integrated gradients (against a blank image, {int(data['saliency_steps'])} steps) of "
            f"the predicted class's logit minus the true class's: red pixels pushed the model toward its wrong "
            f"answer, blue ones toward the right one, each map on its own symmetric scale. The attributions add up "
            f"to the logit difference {met} (completeness). Computed in float32 on the model alone, without "
            f"test-time flips.")
