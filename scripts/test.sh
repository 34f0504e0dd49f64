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
.venv/bin/pytest -q -p no:cacheprovider "$@"
