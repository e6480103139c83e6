"""`make bench`: our trainer against Keras `model.fit` and the other measurements, one module per measurement.

`bench.py` is the entry point (`python benchmarks/bench.py --help`); `processes` runs, times and takes turns
between the measured processes; the workers (`train_worker`, `race`, `matmul`, `data_load`, `peak_memory`) run
as modules in processes of their own (`python -m benchmarks.<worker>` from the repository root).
"""
