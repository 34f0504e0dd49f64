#!/usr/bin/env bash
# The main job on the embedded sandbox: set up, then discover and replicate VMs and verify them.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
exec .venv/bin/snapship demo "$@"
