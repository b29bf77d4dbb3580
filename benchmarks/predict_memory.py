"""Peak memory and throughput of tf-backprop-predict: a 10,000-row CSV against a 1,000,000-row one.

    .venv/bin/python benchmarks/predict_memory.py [--rows=1000000] [--small_rows=10000] [--features=8]

Exports an (untrained) 8-64-64-3 multiclass MLP, writes both CSVs into a temporary folder, runs
the CLI on each in a subprocess and prints, per run, the wall time, rows/s and the child's peak
resident set size (ru_maxrss of that child, read with os.wait4; on Linux the same field that
resource.getrusage(RUSAGE_CHILDREN) reports as the maximum over all children).  Streaming works
when the two peaks are about equal: memory does not grow with the file.
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from tf_backprop import data  # noqa: E402
from tf_backprop.model import MLP  # noqa: E402
from tf_backprop.serving import export  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("rows", 1_000_000, "Rows of the large CSV.")
flags.DEFINE_integer("small_rows", 10_000, "Rows of the small CSV.")
flags.DEFINE_integer("features", 8, "Feature columns.")
flags.DEFINE_integer("chunk", 100_000, "Rows generated and written at a time.")

PREDICT = os.path.join(os.path.dirname(sys.executable), "tf-backprop-predict")
CLASSES = ["cat", "dog", "eel"]


def make_export(folder: str, n: int) -> str:
    """A multiclass export with n features named f1..fn."""
    model = MLP((n, 64, 64, len(CLASSES)), seed=0)
    preprocessing = data.Preprocessing(
        task="multiclass",
        feature_names=[f"f{i + 1}" for i in range(n)],
        feature_mean=[0.0] * n,
        feature_std=[1.0] * n,
        target_name="label",
        class_names=CLASSES,
    )
    return export.export_saved_model(model, preprocessing, None, os.path.join(folder, "export"))


def write_csv(path: str, rows: int, n: int, chunk: int) -> int:
    """Writes `rows` rows of random features in chunks (flat memory here too); returns bytes."""
    rng = np.random.default_rng(0)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(",".join(f"f{i + 1}" for i in range(n)) + "\n")
        for start in range(0, rows, chunk):
            np.savetxt(handle, rng.normal(size=(min(chunk, rows - start), n)), fmt="%.6g", delimiter=",")
    return os.path.getsize(path)


def run_predict(model: str, source: str, output: str) -> tuple[float, int]:
    """Runs the CLI; returns (wall seconds, the child's peak RSS in bytes)."""
    with tempfile.TemporaryFile() as stderr:
        start = time.perf_counter()
        child = subprocess.Popen(
            [PREDICT, f"--model={model}", f"--input={source}", f"--output={output}"], stderr=stderr
        )
        _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage
        elapsed = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        stderr.seek(0)
        message = stderr.read().decode(errors="replace").strip()
    if child.returncode != 0:
        raise RuntimeError(f"tf-backprop-predict exited {child.returncode}: {message}")
    return elapsed, usage.ru_maxrss * 1024  # Linux reports kilobytes


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv):
    del argv
    folder = tempfile.mkdtemp(prefix="predict_memory-")
    try:
        model = make_export(folder, FLAGS.features)
        results = []
        for rows in (FLAGS.small_rows, FLAGS.rows):
            source = os.path.join(folder, f"rows-{rows}.csv")
            size = write_csv(source, rows, FLAGS.features, FLAGS.chunk)
            elapsed, peak = run_predict(model, source, os.path.join(folder, "out.csv"))
            with open(os.path.join(folder, "out.csv"), "rb") as handle:
                written = sum(1 for _ in handle) - 1
            assert written == rows, (written, rows)
            results.append((rows, size, elapsed, peak))
            os.remove(source)
        report(results)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def report(results: list[tuple[int, int, float, int]]) -> None:
    print(
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}; {cpu_model()}; {os.cpu_count()} CPUs; Python {platform.python_version()}"
    )
    print(f"tf-backprop-predict, {FLAGS.features} features, 8-64-64-3 multiclass MLP, default batch size\n")
    print(f"| {'rows':>9} | {'CSV MB':>7} | {'wall s':>7} | {'rows/s':>9} | {'peak RSS MB':>11} |")
    print(f"|{'-' * 11}|{'-' * 9}|{'-' * 9}|{'-' * 11}|{'-' * 13}|")
    for rows, size, elapsed, peak in results:
        print(
            f"| {rows:>9,} | {size / 1e6:>7.1f} | {elapsed:>7.1f} | {rows / elapsed:>9,.0f} | {peak / 2**20:>11.0f} |"
        )
    (small, _, t_small, p_small), (large, _, t_large, p_large) = results
    print(f"\npeak RSS ratio, {large:,} vs {small:,} rows: {p_large / p_small:.2f}")
    print(
        f"rows/s excluding start-up ((large - small) / (t_large - t_small)): {(large - small) / (t_large - t_small):,.0f}"
    )
    maximum = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(f"getrusage(RUSAGE_CHILDREN).ru_maxrss over both runs: {maximum / 2**20:.0f} MB")


if __name__ == "__main__":
    app.run(main)
