"""Worker: run a command and print its peak resident memory in MB (`python -m benchmarks.peak_memory CMD ...`).

This process runs only that command, so its children's peak is the command's own; a failed command exits with
the end of its error output."""

from __future__ import annotations

import resource
import subprocess
import sys


def main(command: list[str]) -> None:
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        sys.exit(done.stderr[-2000:])
    print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


if __name__ == "__main__":
    main(sys.argv[1:])
