#!/usr/bin/env bash
# The second command of the README: install if needed, lint, then run every test.
# Extra arguments go to pytest (e.g. -k cluster, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check .
exec python -m pytest -q --durations=10 "$@"
