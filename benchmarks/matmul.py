"""The machine's fp32 matmul ceiling through TensorFlow, the yardstick of "% of ceiling"; the worker runs in a
process of its own per kernel library (`python -m benchmarks.matmul N ITERATIONS`, TF_ENABLE_ONEDNN_OPTS set)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from benchmarks.processes import ROOT, module


def matmul_ceiling(n: int = 2048, iterations: int = 20) -> float:
    """fp32 GFLOP/s of a large matmul through TensorFlow on this machine: the best of 3, with TensorFlow's
    own (Eigen) kernels and with oneDNN's, so that neither trainer's settings get an easy ceiling."""
    return max(matmul_gflops(n, iterations, onednn) for onednn in ("0", "1"))


def matmul_gflops(n: int, iterations: int, onednn: str) -> float:
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn}
    return float(subprocess.run(module("matmul", str(n), str(iterations)), capture_output=True, text=True, env=env,
                                cwd=ROOT).stdout.split()[-1])


def main(n: int, iterations: int) -> None:
    """Print the fp32 GFLOP/s of the best of 3 chains of `iterations` n x n matmuls."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n)) / n ** 0.5

    @tf.function
    def run():
        c = a
        for _ in range(iterations):  # each product depends on the last: nothing to fold or skip
            c = tf.matmul(c, b)
        return c

    run().numpy()
    best = min((lambda s: (run().numpy(), time.perf_counter() - s)[1])(time.perf_counter()) for _ in range(3))
    print(2 * n ** 3 * iterations / best / 1e9)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
