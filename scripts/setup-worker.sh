#!/usr/bin/env bash
# Install a real mlx-openai-server worker into its own virtualenv.
#
#     scripts/setup-worker.sh [pypi|jit]
#
#   pypi (default)  PyPI's mlx-openai-server 1.8.1
#   jit             the JIT-and-Auto-Unload branch (1.3.12), built from its source tarball
#                   ${MLX_HUB_JIT_WORKER_SRC:-../shared/worker-src/mlx-openai-server-jit-and-auto-unload-0ea0081.tar.gz}
#                   (relative to the repository; see worker-jit-branch.md)
#
# On Linux (x86-64/aarch64, CPU) `pip install mlx-openai-server` does not resolve, so the
# worker stack is installed in three steps into a separate venv (see worker-on-linux.md):
#   1. torch==2.13.0 (a CPU build lies on this machine's disk; outlines_core imports torch)
#   2. mlx[cpu], mlx-lm, outlines and the server's requirements (for jit: under a constraints
#      file, plus the vision/audio/embeddings handlers an `lm` worker of that line imports)
#   3. pypi: mlx-openai-server==1.8.1 --no-deps; jit: the extracted source, --no-deps -e
#      (its non-editable install is broken upstream: it packages only the top-level module)
#
# Venv: pypi ${MLX_HUB_WORKER_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/mlx-openai-server-hub/worker-venv-1.8.1},
# jit ${MLX_HUB_JIT_WORKER_VENV:-<same folder>/worker-venv-jit-1.3.12}. Python used to create
# it: ${MLX_HUB_WORKER_PYTHON:-python3} (must be 3.11).
#
# Idempotent: a stamp file in the venv records a hash of the pinned requirement set (for jit
# also the constraints and the tarball's sha256, so a changed source rebuilds); when it
# matches, the script does nothing and exits at once. Progress goes to stderr; the LAST line
# of stdout is the absolute path of the worker executable, so callers can do
#     WORKER="$(scripts/setup-worker.sh | tail -n1)"
#
# On macOS arm64 the pypi worker is a dependency of the hub itself; the script only locates
# it there. The jit recipe is for Linux (CPU) only.
set -euo pipefail

STAMP_FORMAT="1"

log() { printf '[setup-worker] %s\n' "$*" >&2; }
die() { printf '[setup-worker] ERROR: %s\n' "$*" >&2; exit 1; }

LINE="${1:-pypi}"
case "$LINE" in
    pypi | jit) ;;
    *) die "unknown worker line '$LINE' (expected pypi or jit)" ;;
esac

# --- macOS arm64: the worker comes from the main install ---------------------------------
if [[ "$LINE" == "pypi" && "$(uname -s)" == "Darwin" && "$(uname -m)" == "arm64" ]]; then
    log "macOS arm64: mlx-openai-server is a dependency of mlx-openai-server-hub here;"
    log "the worker comes from the main install (pip install mlx-openai-server-hub)."
    if exe="$(command -v mlx-openai-server)"; then
        log "found worker: $exe"
        printf '%s\n' "$exe"
        exit 0
    fi
    die "mlx-openai-server is not on PATH; install the hub into the active environment first"
fi

# --- Pinned requirement set (hashed into the stamp) ----------------------------------------
STEP1=("torch==2.13.0")
CONSTRAINTS=()
if [[ "$LINE" == "pypi" ]]; then
    WORKER_VERSION="1.8.1"
    VENV_NAME="worker-venv-${WORKER_VERSION}"
    VENV_OVERRIDE="${MLX_HUB_WORKER_VENV:-}"
    STEP2=(
        "mlx[cpu]"
        "mlx-lm>=0.31.3,<0.32"
        "outlines>=1.1.1,<1.2"
        "fastapi>=0.115.14,<0.130"
        "uvicorn>=0.35.0,<0.40"
        "loguru>=0.7.3,<0.8"
        "click>=8.2.1,<8.4"
        "httpx>=0.28,<1"
        "json_repair>=0.52.1,<0.60"
        "openai>=2.21,<3"
        "openai-harmony>=0.0.8,<0.1"
        "pillow>=12.1.1,<13"
        "python-multipart>=0.0.20,<0.0.25"
        "rich>=14,<15"
        "xxhash>=3.6,<4"
        "aiofiles>=25,<26"
        "dill>=0.4,<0.5"
        "numpy>=2.2.0,<2.4"
    )
    STEP3=("mlx-openai-server==${WORKER_VERSION}")
    # A flag only the worker of this line lists, to catch a wrong install.
    HELP_MARKER="--served-model-name"
    SRC_HASH="pypi"
else
    [[ "$(uname -s)" == "Linux" ]] || die "the jit worker recipe is for Linux (CPU) only"
    WORKER_VERSION="1.3.12"
    VENV_NAME="worker-venv-jit-${WORKER_VERSION}"
    VENV_OVERRIDE="${MLX_HUB_JIT_WORKER_VENV:-}"
    REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    SRC_TARBALL="${MLX_HUB_JIT_WORKER_SRC:-$REPO_ROOT/../shared/worker-src/mlx-openai-server-jit-and-auto-unload-0ea0081.tar.gz}"
    [[ -f "$SRC_TARBALL" ]] || die "no JIT worker source at $SRC_TARBALL (set MLX_HUB_JIT_WORKER_SRC)"
    # mlx-lm 0.28.3 needs transformers<5: with 5.x every generation fails with a 500.
    CONSTRAINTS=(
        "mlx-lm==0.28.3"
        "transformers<5"
        "torch==2.13.0"
        "numpy>=2.2.0,<2.4"
        "outlines>=1.1.1,<1.3"
    )
    STEP2=(
        "mlx[cpu]>=0.30"
        "mlx-lm==0.28.3"
        "transformers<5"
        "outlines>=1.1.1,<1.3"
        "fastapi>=0.115.14,<0.130"
        "uvicorn>=0.35.0,<0.40"
        "loguru>=0.7.3,<0.8"
        "click>=8.2.1,<8.4"
        "httpx>=0.28,<1"
        "json_repair>=0.52.1,<0.60"
        "openai-harmony>=0.0.4,<0.1"
        "pydantic>=2,<3"
        "pillow>=11,<13"
        "python-multipart>=0.0.20,<0.0.25"
        "rich>=14,<15"
        "aiofiles>=25,<26"
        "psutil"
        # An `lm` worker of this line imports every handler at start.
        "mlx-vlm==0.3.9"
        "mlx-embeddings==0.0.5"
        "mlx-whisper==0.4.3"
        "librosa==0.11.0"
        "av==16.1.0"
        "aiohttp"
        "dill"
        "xxhash"
    )
    HELP_MARKER="--jit"
fi

CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/mlx-openai-server-hub"
VENV="${VENV_OVERRIDE:-$CACHE_ROOT/$VENV_NAME}"
PYTHON="${MLX_HUB_WORKER_PYTHON:-python3}"
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
WORKER_EXE="$VENV/bin/mlx-openai-server"
STAMP="$VENV/.mlx-hub-worker-stamp"

sha256() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum | cut -d' ' -f1
    else
        shasum -a 256 | cut -d' ' -f1
    fi
}

if [[ "$LINE" == "jit" ]]; then
    SRC_HASH="$(sha256 <"$SRC_TARBALL")"
fi

# The pypi line hashes exactly as before this script knew two lines, so its cache survives.
REQ_HASH="$(
    {
        printf 'format=%s\n' "$STAMP_FORMAT"
        printf 'step1 %s\n' "${STEP1[@]}"
        printf 'step2 %s\n' "${STEP2[@]}"
        if [[ "$LINE" == "pypi" ]]; then
            printf 'step3 --no-deps %s\n' "${STEP3[@]}"
        else
            printf 'constraint %s\n' "${CONSTRAINTS[@]}"
            printf 'step3 --no-deps -e source sha256=%s\n' "$SRC_HASH"
        fi
    } | sha256
)"

stamp_ok() {
    [[ -f "$STAMP" && -x "$WORKER_EXE" ]] && [[ "$(head -n1 "$STAMP")" == "$REQ_HASH" ]]
}

# --- Fast path: already installed with the same requirement set --------------------------
if stamp_ok; then
    log "worker venv is up to date: $VENV"
    printf '%s\n' "$WORKER_EXE"
    exit 0
fi

# --- Serialise concurrent runs (two test sessions starting at once) ------------------------
mkdir -p "$(dirname "$VENV")"
if command -v flock >/dev/null 2>&1; then
    exec 9>"${VENV}.lock"
    if ! flock -n 9; then
        log "another setup-worker.sh run holds ${VENV}.lock; waiting for it"
        flock 9
    fi
    if stamp_ok; then
        log "worker venv was completed by another run: $VENV"
        printf '%s\n' "$WORKER_EXE"
        exit 0
    fi
fi

# --- Python check --------------------------------------------------------------------------
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found"
PY_VER="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[[ "$PY_VER" == "3.11" ]] || die "$PYTHON is Python $PY_VER; the worker stack needs 3.11 \
(the CPU torch 2.13.0 wheel on this machine is for 3.11). Set MLX_HUB_WORKER_PYTHON."

START_TS=$SECONDS
log "installing mlx-openai-server ${WORKER_VERSION} ($LINE) into $VENV (about 1.5-3 minutes)"

# --- Create (or repair) the venv -----------------------------------------------------------
if [[ -e "$VENV" && ! -f "$VENV/pyvenv.cfg" ]]; then
    if [[ -n "$(ls -A "$VENV" 2>/dev/null)" ]]; then
        die "$VENV exists, is not empty and is not a virtualenv; refusing to touch it"
    fi
fi
if [[ -f "$VENV/pyvenv.cfg" ]]; then
    VENV_VER="$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' \
        2>/dev/null || echo broken)"
    if [[ "$VENV_VER" != "$PY_VER" ]]; then
        log "existing venv is unusable (python: $VENV_VER); recreating it"
        "$PYTHON" -m venv --clear "$VENV"
    else
        log "reusing existing venv (incomplete or older install)"
    fi
else
    log "creating venv with $("$PYTHON" -c 'import sys; print(sys.executable)') ($PY_VER)"
    "$PYTHON" -m venv "$VENV"
fi
rm -f "$STAMP"

PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --no-input)
PIP_INSTALL=("${PIP[@]}" install --progress-bar off)

log "step 1/3: ${STEP1[*]}"
"${PIP_INSTALL[@]}" "${STEP1[@]}" >&2
log "step 2/3: mlx[cpu], mlx-lm, outlines and the server's requirements"
if [[ "$LINE" == "pypi" ]]; then
    "${PIP_INSTALL[@]}" "${STEP2[@]}" >&2
else
    printf '%s\n' "${CONSTRAINTS[@]}" >"$VENV/constraints.txt"
    "${PIP_INSTALL[@]}" -c "$VENV/constraints.txt" "${STEP2[@]}" >&2
fi
if [[ "$LINE" == "pypi" ]]; then
    log "step 3/3: --no-deps ${STEP3[*]}"
    "${PIP_INSTALL[@]}" --no-deps "${STEP3[@]}" >&2
else
    # The editable install points into this folder, so it lives inside the venv.
    SRC_DIR="$VENV/src"
    log "step 3/3: --no-deps -e $(basename "$SRC_TARBALL") (extracted into $SRC_DIR)"
    rm -rf "$SRC_DIR"
    mkdir -p "$SRC_DIR"
    tar -xzf "$SRC_TARBALL" -C "$SRC_DIR" --strip-components=1
    "${PIP_INSTALL[@]}" --no-deps -e "$SRC_DIR" >&2
fi

# --- Verify --------------------------------------------------------------------------------
log "verifying: $WORKER_EXE launch --help"
[[ -x "$WORKER_EXE" ]] || die "$WORKER_EXE was not installed"
if ! HELP="$("$WORKER_EXE" launch --help 2>&1)"; then
    printf '%s\n' "$HELP" >&2
    die "'mlx-openai-server launch --help' failed"
fi
grep -q -- "$HELP_MARKER" <<<"$HELP" \
    || die "'launch --help' does not list $HELP_MARKER; wrong worker version?"
"$VENV/bin/python" -c 'import mlx.core, mlx_lm, tokenizers' \
    || die "the worker venv cannot import mlx.core, mlx_lm and tokenizers"

{
    printf '%s\n' "$REQ_HASH"
    printf 'mlx-openai-server==%s (%s, source %s)\n' "$WORKER_VERSION" "$LINE" "$SRC_HASH"
    printf 'installed %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"$STAMP"

log "done in $((SECONDS - START_TS)) s; venv size $(du -sh "$VENV" 2>/dev/null | cut -f1)"
printf '%s\n' "$WORKER_EXE"
