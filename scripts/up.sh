#!/usr/bin/env bash
# `neocloud up` from a fresh clone: installs the build's Debian packages if
# missing (cmake and libclang for llama.cpp; `sudo` when not root), builds
# the release binary and runs it with any arguments given, e.g.
#   scripts/up.sh --listen 0.0.0.0:8080 --threads 8
# The default models are fetched into ~/.cache/neocloud on first start.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/build-env.sh
# The build is shared with scripts/test.sh and reused across clones.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/neocloud-build/target}"
exec cargo run --release --locked -p neocloud -- up "$@"
