#!/usr/bin/env bash
# The first command of the README: install if needed, then bring up Redis, three nodes and a router and
# send the sample photos through them. Extra arguments go to ringserve-up (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/ringserve-up "$@"
