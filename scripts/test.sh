#!/usr/bin/env bash
# One command on a fresh machine: set up .venv, then run the test suite.
# Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh || exit 1
source .venv/bin/activate
python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  # pytest's 5 means "no tests collected": for this project that is a broken suite, not a pass.
  echo "test.sh: pytest collected no tests; failing on purpose" >&2
  exit 1
fi
exit "$rc"
