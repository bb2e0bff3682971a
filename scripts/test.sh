#!/usr/bin/env bash
# Run the rhlens test suite (sets up first: the environment and the build are reused when present).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export LIBTORCH_USE_PYTORCH=1
export VIRTUAL_ENV="$PWD/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
cargo test --release "$@"
