#!/usr/bin/env bash
# Set up and run mlx-openai-server-hub on a fresh machine, in one command:
#
#     scripts/run.sh
#
# 1. creates .venv with the system python3 (3.11 or newer) if it is missing, and installs
#    this checkout into it (`pip install -e .`; skipped when pyproject.toml is unchanged);
# 2. on Linux, installs the real mlx-openai-server worker into its own cached venv
#    (scripts/setup-worker.sh); on macOS the worker comes with step 1;
# 3. when there is no hub.yaml yet (~/mlx-openai-server-hub/hub.yaml, or
#    $MLX_HUB_CONFIG_PATH), writes a starter one with `init --demo`, which also builds a
#    tiny local model, so no download from a model hub is needed;
# 4. starts the hub in the background and waits until its default models are loaded;
# 5. prints how to talk to it, and how to stop it.
#
# Idempotent: run it again and it only reports the running hub.
#
# Environment: MLX_HUB_VENV (default: .venv in this checkout), MLX_HUB_PYTHON (default:
# python3), MLX_HUB_CONFIG_PATH, and setup-worker.sh's own variables.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MLX_HUB_VENV:-$ROOT/.venv}"
PYTHON="${MLX_HUB_PYTHON:-python3}"
STAMP="$VENV/.mlx-hub-install-stamp"

log() { printf '[run] %s\n' "$*" >&2; }
die() { printf '[run] ERROR: %s\n' "$*" >&2; exit 1; }

sha256() {
    if command -v sha256sum >/dev/null 2>&1; then sha256sum | cut -d' ' -f1; else shasum -a 256 | cut -d' ' -f1; fi
}

# --- 1. the hub's virtualenv ---------------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
    command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found; install Python 3.11+"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "$PYTHON is $("$PYTHON" -V 2>&1); mlx-openai-server-hub needs Python 3.11+"
    log "creating $VENV with $("$PYTHON" -c 'import sys; print(sys.executable)')"
    "$PYTHON" -m venv "$VENV"
fi
WANT="$(cat "$ROOT/pyproject.toml" | sha256)"
if [[ ! -x "$VENV/bin/mlx-openai-server-hub" || ! -f "$STAMP" || "$(cat "$STAMP")" != "$WANT" ]]; then
    log "installing mlx-openai-server-hub into $VENV (pip install -e .)"
    "$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off -q -e "$ROOT" >&2
    printf '%s\n' "$WANT" >"$STAMP"
else
    log "$VENV is up to date"
fi
HUB="$VENV/bin/mlx-openai-server-hub"

# --- 2. the worker ---------------------------------------------------------------------------
if [[ "$(uname -s)" == "Darwin" ]]; then
    WORKER="$VENV/bin/mlx-openai-server"
    [[ -x "$WORKER" ]] || die "$WORKER is missing (mlx-openai-server installs only on Apple silicon)"
else
    log "making sure the mlx-openai-server worker is installed (scripts/setup-worker.sh)"
    WORKER="$("$ROOT/scripts/setup-worker.sh" | tail -n1)"
    [[ -x "$WORKER" ]] || die "setup-worker.sh did not produce a worker executable ($WORKER)"
fi

# --- 3. hub.yaml -----------------------------------------------------------------------------
CONFIG="$("$VENV/bin/python" -c \
    'from mlx_openai_server_hub.config import resolve_config_path; print(resolve_config_path())')"
if [[ -e "$CONFIG" ]]; then
    log "using the existing $CONFIG"
else
    log "no $CONFIG yet: writing a starter config with a tiny local demo model"
    "$HUB" --config "$CONFIG" init --demo --worker-command "$WORKER"
fi

# --- 4. start --------------------------------------------------------------------------------
"$HUB" --config "$CONFIG" start

# --- 5. how to use it ------------------------------------------------------------------------
read -r URL MODEL KEY < <("$VENV/bin/python" - "$CONFIG" <<'PY'
import sys
from mlx_openai_server_hub.client import browse_host, url_host
from mlx_openai_server_hub.config import load_config

cfg = load_config(sys.argv[1])
model = next((m for m in cfg.models if m.default), cfg.models[0])
print(f"http://{url_host(browse_host(cfg.host))}:{cfg.port}", model.name,
      cfg.api_keys[0] if cfg.api_keys else "-")
PY
)
AUTH=()
[[ "$KEY" != "-" ]] && AUTH=(-H "Authorization: Bearer $KEY")
BODY="{\"model\": \"$MODEL\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello!\"}], \"max_tokens\": 16}"

cat <<EOF

The hub is running. Talk to it with any OpenAI client (base URL $URL/v1), e.g.:

  curl $URL/v1/chat/completions ${AUTH[*]:+-H 'Authorization: Bearer $KEY' }\\
    -H 'Content-Type: application/json' \\
    -d '$BODY'

Status page:  $URL/hub
Status:       $HUB --config $CONFIG status
Logs:         $HUB --config $CONFIG logs -f
Stop it:      $HUB --config $CONFIG stop
EOF

if command -v curl >/dev/null 2>&1; then
    printf '\nTrying it once now:\n'
    curl -sS --max-time 300 "$URL/v1/chat/completions" "${AUTH[@]}" \
        -H 'Content-Type: application/json' -d "$BODY" || true
    printf '\n'
fi
