#!/usr/bin/env bash
# The test command: set up, then lint, type-check and run the whole suite. Non-zero on any failure.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
echo "== ruff"
.venv/bin/ruff check .
echo "== mypy"
.venv/bin/mypy snapship workflows activities sandbox starter.py worker.py
echo "== pytest"
# Two processes (CI has 2 cores; much of an e2e test is waiting on the far end): each has its
# own Temporal dev server and sandboxes; worksteal evens out the long e2e tests.
.venv/bin/pytest -q -p no:cacheprovider -n "${SNAPSHIP_TEST_PROCESSES:-2}" --dist worksteal "$@"
