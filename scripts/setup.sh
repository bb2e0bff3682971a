#!/usr/bin/env bash
# Set up rhlens from a fresh checkout: a project-local Python environment with libtorch (the PyPI
# torch 2.11.0 wheel, which runs on CPU-only machines and on CUDA GPUs) and the pinned reference
# stack, then the release build. Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.11.0
TRANSFORMERS_VERSION=5.17.0
# the image decoders and the resize are exact against this Pillow (its libjpeg-turbo and libwebp)
PILLOW_VERSION=13.0.0

need_apt=()
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
# the JPEG and WebP decoders are C sources built during the cargo build
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
# apt only when something is missing; without root (or sudo) or without apt, say what to install
apt_install() {
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && sudo="sudo -n"
  fi
  if ! command -v apt-get >/dev/null 2>&1 || { [ "$(id -u)" -ne 0 ] && [ -z "$sudo" ]; }; then
    echo "setup: cannot install $* (needs apt-get as root): install them with your system's package manager" >&2
    return 1
  fi
  $sudo apt-get update -qq && $sudo apt-get install -y -qq "$@"
}
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${need_apt[*]}"
  apt_install "${need_apt[@]}" || exit 1
fi
# headless Chromium for the report's browser tests (tests/report_page.rs); Debian's `chromium`
# package is a real browser (Ubuntu's is a snap stub: there, set RHLENS_CHROMIUM to a browser)
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1 \
  && [ -z "${RHLENS_CHROMIUM:-}" ]; then
  echo "setup: installing chromium (headless browser for the report tests)"
  apt_install chromium \
    || echo "setup: warning: chromium could not be installed; the report's browser tests will be skipped" >&2
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo (Rust) is required; install it from your system's packages or rustup" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python - "$TORCH_VERSION" "$TRANSFORMERS_VERSION" "$PILLOW_VERSION" <<'PY' >/dev/null 2>&1
import sys, torch, transformers, PIL, safetensors, numpy, scipy
assert torch.__version__.split("+")[0] == sys.argv[1], torch.__version__
assert transformers.__version__ == sys.argv[2], transformers.__version__
assert PIL.__version__ == sys.argv[3], PIL.__version__
PY
then
  echo "setup: installing torch==$TORCH_VERSION and the reference stack into .venv (a few GB, about a minute)"
  .venv/bin/pip install --quiet --disable-pip-version-check \
    "torch==$TORCH_VERSION" "transformers==$TRANSFORMERS_VERSION" "pillow==$PILLOW_VERSION" safetensors numpy scipy
fi

export LIBTORCH_USE_PYTORCH=1
export VIRTUAL_ENV="$PWD/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
echo "setup: building rhlens (release)"
cargo build --release --quiet
echo "setup: done: $(./target/release/rhlens --version)"
