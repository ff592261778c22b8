#!/usr/bin/env bash
# Create .venv inside the repo and install the pinned dependencies (idempotent:
# re-installs only when requirements.lock or pyproject.toml change).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
want=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.setup-stamp 2>/dev/null || true)" != "$want" ]; then
  echo "setup: installing pinned dependencies (requirements.lock) into .venv"
  .venv/bin/python -m pip install -q --upgrade "pip>=24"
  .venv/bin/python -m pip install -q -c requirements.lock -e '.[test]'
  echo "$want" > .venv/.setup-stamp
fi
