#!/usr/bin/env bash
# The whole test suite: Rust unit tests, then the end-to-end suite, which
# starts the real `neocloud` binary and calls it with the official `openai`
# Python client and plain HTTP. Safe to run again: everything it installs or
# builds is cached under ~/.cache.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/neocloud-build/target}"
export NEOCLOUD_CACHE="${NEOCLOUD_CACHE:-$HOME/.cache/neocloud}"
venv="${NEOCLOUD_TEST_VENV:-$HOME/.cache/neocloud-build/venv-e2e}"

# Python clients for the end-to-end tests, in a venv of their own.
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --disable-pip-version-check -q -r tests/e2e/requirements.txt

echo "== cargo test"
cargo test --workspace --locked

echo "== end-to-end (real binary, openai client, plain HTTP)"
cargo build --locked -p neocloud
export NEOCLOUD_BIN="$CARGO_TARGET_DIR/debug/neocloud"
"$venv/bin/python" -m pytest tests/e2e -q -p no:cacheprovider
