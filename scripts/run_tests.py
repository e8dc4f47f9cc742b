"""Runs the test suite once per Keras backend and sums up.

Usage: python scripts/run_tests.py [pytest args...]

The backends run side by side (one pytest process each; much of a test's
time is single-threaded tracing and compiling, so this uses both cores of a
small machine better), and each backend's output is printed when it ends.
Set BACKENDS="jax torch" to run a subset, SERIAL=1 to run them one after
another with live output. Exits non-zero if any backend has a failure or an
error, or collected no test.
"""

import os
import re
import subprocess
import sys
import tempfile
import time

BACKENDS = os.environ.get("BACKENDS", "jax tensorflow torch").split()
COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)")


def command():
    return [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        # The slowest tests in the log: where to trim when the suite grows.
        "--durations=10",
        *sys.argv[1:],
    ]


def env_for(backend):
    env = {**os.environ, "KERAS_BACKEND": backend}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


def counts_of(output, returncode):
    lines = reversed(output.splitlines())
    last = next((line for line in lines if line.strip()), "")
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for number, kind in COUNT.findall(last):
        kind = "failed" if kind.startswith("error") else kind
        if kind in counts:
            counts[kind] += int(number)
    # pytest exits 5 when nothing was collected: that is a failure here.
    ok = returncode == 0 and counts["passed"] > 0
    if not ok:
        counts["failed"] = max(counts["failed"], 1)
    return counts, ok


def run_serial():
    results = {}
    for backend in BACKENDS:
        print(f"=== KERAS_BACKEND={backend}: {' '.join(command())}", flush=True)
        proc = subprocess.Popen(
            command(), env=env_for(backend), stdout=subprocess.PIPE, text=True
        )
        lines = []
        for line in proc.stdout:
            print(line, end="", flush=True)
            lines.append(line)
        proc.wait()
        results[backend] = counts_of("".join(lines), proc.returncode)
    return results


def run_parallel():
    logs, procs = {}, {}
    for backend in BACKENDS:
        logs[backend] = tempfile.TemporaryFile("w+")
        procs[backend] = subprocess.Popen(
            command(),
            env=env_for(backend),
            stdout=logs[backend],
            stderr=subprocess.STDOUT,
            text=True,
        )
    print(
        f"running {', '.join(BACKENDS)} side by side: {' '.join(command())}",
        flush=True,
    )
    start = time.monotonic()
    results, pending = {}, dict(procs)
    while pending:
        for backend, proc in list(pending.items()):
            if proc.poll() is None:
                continue
            del pending[backend]
            minutes = (time.monotonic() - start) / 60
            logs[backend].seek(0)
            output = logs[backend].read()
            print(
                f"\n=== KERAS_BACKEND={backend} (ended after {minutes:.1f} min)"
                f"\n{output}",
                flush=True,
            )
            results[backend] = counts_of(output, proc.returncode)
        time.sleep(1)
    return {backend: results[backend] for backend in BACKENDS}


def main():
    serial = os.environ.get("SERIAL", "0") not in ("0", "")
    results = run_serial() if serial else run_parallel()
    totals = {"passed": 0, "failed": 0, "skipped": 0}
    print("\n=== per backend")
    for backend, (counts, _) in results.items():
        for kind in totals:
            totals[kind] += counts[kind]
        print(
            f"{backend}: {counts['passed']} passed, {counts['failed']} failed, "
            f"{counts['skipped']} skipped"
        )
    print(
        f"total: {totals['passed']} passed, {totals['failed']} failed, "
        f"{totals['skipped']} skipped"
    )
    return 0 if all(ok for _, ok in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
