"""Runs the test suite once per Keras backend and sums up.

Usage: python scripts/run_tests.py [pytest args...]
Set BACKENDS="jax torch" to run a subset. Exits non-zero if any backend
has a failure or an error.
"""

import os
import re
import subprocess
import sys

BACKENDS = os.environ.get("BACKENDS", "jax tensorflow torch").split()
COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)")


def main():
    totals = {"passed": 0, "failed": 0, "skipped": 0}
    lines = []
    ok = True
    for backend in BACKENDS:
        env = {**os.environ, "KERAS_BACKEND": backend}
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        command = [sys.executable, "-m", "pytest", "-q", *sys.argv[1:]]
        print(f"=== KERAS_BACKEND={backend}: {' '.join(command)}", flush=True)
        proc = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, text=True
        )
        last = ""
        for line in proc.stdout:
            print(line, end="", flush=True)
            if line.strip():
                last = line
        proc.wait()
        counts = {kind: 0 for kind in totals}
        for number, kind in COUNT.findall(last):
            kind = "failed" if kind.startswith("error") else kind
            if kind in counts:
                counts[kind] += int(number)
        # pytest exits 5 when nothing was collected: that is a failure here.
        if proc.returncode != 0 or counts["passed"] == 0:
            ok = False
            counts["failed"] = max(counts["failed"], 1)
        for kind in totals:
            totals[kind] += counts[kind]
        lines.append(
            f"{backend}: {counts['passed']} passed, {counts['failed']} failed, "
            f"{counts['skipped']} skipped"
        )
    print("\n=== per backend")
    for line in lines:
        print(line)
    print(
        f"total: {totals['passed']} passed, {totals['failed']} failed, "
        f"{totals['skipped']} skipped"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
