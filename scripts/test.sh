#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh machine, then run all of it:
# lint, unit, integration (fake workers), end-to-end (the real mlx-openai-server
# worker on the CPU with a tiny model made at test time), browser and soak tests.
# Extra arguments go to pytest (e.g. `scripts/test.sh tests/unit -x`).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*" >&2; }

# 1. A browser (and an emoji font for its screenshots) for the status-page tests.
if [ "$(uname -s)" = "Linux" ] && command -v apt-get >/dev/null 2>&1; then
    missing=()
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    dpkg -s fonts-noto-color-emoji >/dev/null 2>&1 || missing+=(fonts-noto-color-emoji)
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]} (Debian packages) for the browser tests"
        SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi

# 2. The project and its test tools in .venv.
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    "$PYTHON" -m venv .venv
fi
stamp=".venv/.installed-$("$PYTHON" -c \
    'import hashlib; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest()[:16])')"
if [ ! -f "$stamp" ]; then
    say "installing the hub and its test dependencies into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[test]'
    touch "$stamp"
fi
if [ "$(uname -s)" = "Darwin" ] && [ -z "${MLX_HUB_TEST_CHROMIUM:-}" ] \
    && [ ! -d "/Applications/Google Chrome.app" ]; then
    say "installing Playwright's Chromium for the browser tests (no Chrome found)"
    .venv/bin/python -m playwright install chromium
fi

# 3. Real workers for the end-to-end tests, each line in its own cached virtualenv:
#    PyPI 1.8.1 and (Linux only) the JIT-and-Auto-Unload branch 1.3.12 built from source.
if [ "$(uname -s)" = "Linux" ]; then
    say "setting up the real mlx-openai-server workers (cached after the first run)"
    MLX_HUB_TEST_WORKER="$(scripts/setup-worker.sh pypi | tail -n1)"
    MLX_HUB_TEST_JIT_WORKER="$(scripts/setup-worker.sh jit | tail -n1)"
    export MLX_HUB_TEST_JIT_WORKER
else
    MLX_HUB_TEST_WORKER="$(pwd)/.venv/bin/mlx-openai-server"
fi
export MLX_HUB_TEST_WORKER

# 4. Lint, then every test.
say "ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
say "pytest"
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
