#!/usr/bin/env bash
# ezrunner's two entry points on a fresh Debian/Ubuntu machine with Python 3.11+:
#   ./dev.sh app [ARGS...]    install whatever is missing, then open the app
#   ./dev.sh test [ARGS...]   install whatever is missing, then run the whole test suite
# Everything goes into ./.venv; the system Python is left alone.
set -euo pipefail
cd "$(dirname "$0")"
mode=${1:-}
[ $# -gt 0 ] && shift
case "$mode" in app|test) ;; *) echo "usage: ./dev.sh app|test [ARGS...]" >&2; exit 2 ;; esac

say() { printf '[dev.sh] %s\n' "$*" >&2; }
# pip -q still warns about every find-links/index location that lacks a package;
# keep real errors, drop that noise.
pipq() { "$py" -m pip "$@" 2>&1 | { grep -v -e "is ignored: it is neither a file nor a directory" -e "BuildBackendWarning" || true; }; }
venv=${EZ_VENV:-.venv}
py="$venv/bin/python"

# 1. System packages the tests need (root only; otherwise the docker tests skip).
if [ "$mode" = test ] && [ "$(id -u)" = 0 ]; then
  need=()
  command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
  command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
  command -v kubectl >/dev/null 2>&1 || need+=(kubernetes-client)
  if [ ${#need[@]} -gt 0 ]; then
    say "apt-get install ${need[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi

# 2. The virtual environment: the CPU build of torch first, so that the [serve]
#    extra finds it satisfied and never pulls the CUDA wheels.
if [ ! -x "$py" ]; then
  say "creating $venv"
  python3 -m venv "$venv"
  pipq install -q --upgrade pip >/dev/null
fi
if ! "$py" -c "import torch" >/dev/null 2>&1; then
  say "installing torch==2.13.0 (CPU build)"
  pipq install -q "torch==${EZ_TORCH_VERSION:-2.13.0}"
fi
stamp="$venv/.ezrunner-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  say "installing ezrunner[serve,dev] (editable)"
  pipq install -q -e ".[serve,dev]"
  touch "$stamp"
fi

if [ "$mode" = app ]; then
  exec "$venv/bin/ezrunner" "$@"
fi

# 3. A Docker engine for the docker-marked tests (started here when we are root).
scripts/ensure-docker || say "no Docker engine: docker tests will skip (or fail when CI=true)"
export PATH="$PWD/$venv/bin:$PATH"
set +e
"$py" -m pytest "$@"
rc=$?
set -e
# pytest's 5 means "no tests collected": that is a failure here, not a pass.
exit $rc
