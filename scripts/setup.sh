#!/usr/bin/env bash
# One idempotent setup for a fresh machine and for a ready one (a second run takes seconds):
# Debian build tools and Chromium, the virtual environment, the project with its extras, and the stub VDDK
# tarball the sandbox hands to `snapship install --vddk-path`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

need_apt=()
for tool in gcc make; do
  command -v "$tool" >/dev/null 2>&1 || need_apt+=("$tool")
done
[ -e /usr/include/stdio.h ] || need_apt+=(libc6-dev)
# Debian's Chromium for the headless Web UI check (scripts/webui_check.py, tests/e2e/test_webui.py).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 11) else 1)'; then
  echo "setup: snapship needs Python 3.11 or newer; $("$python" --version 2>&1) found." >&2
  echo "setup: set PYTHON=/path/to/python3.11 and run again." >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$python" -m venv .venv
fi

# Reinstall only when the dependency list changed since the last successful install.
stamp=.venv/.snapship-install-stamp
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing snapship and its extras into .venv"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[sandbox,dev]"
  echo "$want" > "$stamp"
fi

# Byte-code for the project's own modules: the editable install leaves them to be compiled on
# import, and where PYTHONDONTWRITEBYTECODE is set (as on these machines) nothing is ever kept,
# so every process compiled them again, each VDDK reader (one per disk per run) among them: the
# reader's imports took 0.18-0.26 CPU-s without the byte-code, 0.16-0.22 with it (four pairs).
# Stale files are harmless: Python checks each against its source.
.venv/bin/python -m compileall -q -j 0 snapship activities workflows sandbox worker.py starter.py \
  >/dev/null
# The stub libvixDiskLib, packed like VMware's VDDK tarball (make skips it when up to date).
[ -f sandbox/vddk_stub/Makefile ] && make -s -C sandbox/vddk_stub
echo "setup: ready ($(.venv/bin/temporal --version | head -1))"
