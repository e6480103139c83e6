"""The bench's report: bench.json and bench.md under <output dir>/bench/<UTC time>/, with the machine the
figures were measured on."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone

from benchmarks.processes import ROOT


def machine() -> dict:
    """The facts a speed figure depends on, printed at the top of the report: CPU model, cores, the flags that
    matter (AVX2, AVX-512, bfloat16, AMX), and a oneDNN setting that keeps bfloat16 from running natively."""
    from mnist_pipeline import runtime

    cpu = runtime.cpu()
    return {"cpu": cpu.describe(), "native_bfloat16": cpu.native_bfloat16,
            "bfloat16_blocked_by": cpu.bfloat16_blocked_by,
            "python": sys.version.split()[0]}


def write_report(report: dict, output_dir: str) -> None:
    out = ROOT / output_dir / "bench" / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=False)
    (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (out / "bench.md").write_text(text)
    print(text)
    print(f"bench: {out / 'bench.json'}")


def _tensorboard_section(report: dict) -> list[str]:
    return ["## TensorBoard off vs on (`mnist train --config configs/mlp.yaml --epochs 6`, "
            f"{report['rounds']} runs each, taking turns; medians; steady = epochs 2-6)", "",
            *_table(report["tensorboard"])]


def _table(rows: list[dict]) -> list[str]:
    """Markdown lines of a table of dicts (a [low, high] pair shows as low..high), then a blank line."""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(f"{v[0]}..{v[1]}" if isinstance(v, list) else str(v)
                                       for v in row.values()) + " |")
    return [*lines, ""]


def _machine_lines(report: dict) -> list[str]:
    machine = report.get("machine") or {}
    blocked = machine.get("bfloat16_blocked_by")
    return [f"Machine: {machine.get('cpu', '?')}; native bfloat16: {machine.get('native_bfloat16', '?')}"
            f"{f' (off: {blocked})' if blocked else ''}; Python {machine.get('python', '?')}", ""]


def _shipped_section(report: dict) -> list[str]:
    return ["## Every shipped config as shipped vs forced to float32 (our trainer, processes taking turns)", "",
            *_table(report["shipped"])]


def _trust_section(report: dict) -> list[str]:
    return ["## What the trust report costs (configs/cnn.yaml, 2 epochs; whole commands taking turns, medians)", "",
            *_table(report["trust"])]


def _int8_section(report: dict) -> list[str]:
    return ["## int8 exports against float ones (configs/cnn.yaml; each in its own runtime)", "",
            *_table(report["int8"])]


def _serve_section(report: dict) -> list[str]:
    return ["## Serving under load (mnist serve on localhost, 8 concurrent clients; both engines side by side)", "",
            *_table(report["serve"])]


def _startup_section(report: dict) -> list[str]:
    return ["## Start-up (command to the end of the first group of steps; medians of processes taking turns)", "",
            *_table(report["startup"])]


def markdown(report: dict) -> str:
    if "rows" not in report:  # --only one part
        sections = {"tensorboard": _tensorboard_section, "startup": _startup_section, "shipped": _shipped_section,
                    "trust": _trust_section, "int8": _int8_section, "serve": _serve_section}
        return "\n".join([f"# Benchmark {report['when']}", "", *_machine_lines(report),
                          f"Data: {report['data_dir']}", "",
                          *(line for key, section in sections.items() if key in report for line in section(report))])
    lines = [f"# Benchmark {report['when']}", "", *_machine_lines(report),
             f"Data: {report['data_dir'] or 'random pixels (no data dir)'}; each trainer: {report['rounds']} "
             f"processes taking turns with the others, {report['repeats']} measured repeats in all (each process's "
             "warm-up repeat dropped); medians, spread = min..max.", "", *_table(report["rows"])]
    lines += [f"- fp32 matmul ceiling through TensorFlow: {report['matmul_gflops']} GFLOP/s (the highest of "
                  f"{report['matmul_gflops_samples']}, sampled between the variants)",
              f"- `mnist --help`: {report['help_seconds']} s; `import tensorflow`: "
              f"{report['import_tensorflow_seconds']} s; ratio {report['help_over_import']}",
              f"- load and prepare the full dataset (IDX .gz -> normalized splits): "
              f"{report['load_and_prepare_seconds']} s",
              f"- whole benchmark: {report['bench_seconds']} s", ""]
    if report.get("replicas"):
        lines += ["## One device vs two replicas (MirroredStrategy over 2 logical CPU devices)", "",
                  "Both replicas share the same 2 cores: each step does the same arithmetic plus an all-reduce "
                  "of the gradients, so this measures the strategy's overhead, not a speed-up.", ""]
        lines += _table(report["replicas"])
    if report.get("tensorboard"):
        lines += _tensorboard_section(report)
    if report.get("precision"):
        lines += ["## float32 vs mixed_bfloat16 (our trainer, shipped config, processes taking turns)", "",
                  *_table(report["precision"])]
    if report.get("shipped"):
        lines += _shipped_section(report)
    if report.get("startup"):
        lines += _startup_section(report)
    if report.get("trust"):
        lines += _trust_section(report)
    if report.get("int8"):
        lines += _int8_section(report)
    if report.get("serve"):
        lines += _serve_section(report)
    if report.get("memory"):
        lines += ["## Peak resident memory of whole processes (full Fashion-MNIST)", "",
                  *_table(report["memory"])]
    for race in report.get("race") or []:
        lines += [f"## Time to {race['target']:.0%} test accuracy (Fashion-MNIST; training + validation seconds)",
                  "", "| racer | epochs | seconds | test accuracy per epoch |", "| --- | --- | --- | --- |"]
        for name, r in race["racers"].items():
            accuracies = ", ".join(f"{e['test_accuracy']:.4f}" for e in r["epochs"])
            lines.append(f"| {name} ({race['config'] if name == 'ours' else 'Keras example CNN, model.fit'}) | "
                         f"{r['epochs_to_target'] or 'not reached'} | {r['seconds_to_target']} | {accuracies} |")
        ratio = race["ours_over_classic"]
        lines += ["", f"- ours / classic time: {ratio}" if race["classic_reached"] else
                  f"- ours / classic time: below {ratio} (the classic CNN never reached it: its whole run's time "
                  f"is the bound)", ""]
    return "\n".join(lines)
