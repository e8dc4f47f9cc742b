"""Runs Python code in a fresh interpreter (another backend, other device
flags) and returns the JSON it reports on a `RESULT <json>` line."""

import json
import os
import subprocess
import sys

PREFIX = "RESULT "


def run_reporting(code, *args, **env):
    """Runs `code` with `args` as `sys.argv[1:]` and `env` added to the
    environment; fails with the process's stderr if it reports nothing."""
    proc = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith(PREFIX)]
    assert lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len(PREFIX) :])
