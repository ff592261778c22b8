#!/usr/bin/env bash
# One command on a fresh machine: set up .venv, then run the pipeline (`dvc repro`).
# Extra arguments go to `dvc repro` (e.g. `scripts/repro.sh prepare degrade`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# shellcheck disable=SC1091
source .venv/bin/activate   # stage commands run `python` from this environment
dvc repro "$@"
