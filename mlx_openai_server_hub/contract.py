"""What the hub and its clients must agree on, written once.

- where hub.yaml, hub.token and hub_runtime.json live, and the config defaults a client
  falls back on when it cannot load hub.yaml;
- the control token rule: `MLX_HUB_TOKEN`, else the token file;
- the runtime file's records (`RuntimeState`, `WorkerRecord`) and their JSON form;
- host rules: what a wildcard bind means for a client, IPv6 literals in URLs;
- the command line that runs the hub in the foreground (`serve`).

The CLI's fast `status` path imports this module, so it uses the standard library and
attrs only (no aiohttp, psutil or cattrs: each would add to every command's start-up).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import site
import sys
from pathlib import Path
from typing import Any

import attrs

# --- where things live, and the defaults a client may need without hub.yaml -----------------

HUB_HOME = Path("~/mlx-openai-server-hub")
DEFAULT_CONFIG_PATH = HUB_HOME / "hub.yaml"
DEFAULT_LOG_PATH = HUB_HOME / "logs"
CONFIG_ENV_VAR = "MLX_HUB_CONFIG_PATH"
DEFAULT_HOST = "0.0.0.0"
DEFAULT_PORT = 8000
TOKEN_FILE_NAME = "hub.token"
RUNTIME_FILE_NAME = "hub_runtime.json"
PACKAGE_DIR = Path(__file__).resolve().parent


def token_path_for(config_path: Path) -> Path:
    """`hub.token`, beside hub.yaml."""
    return config_path.parent / TOKEN_FILE_NAME


def runtime_path_for(log_path: Path) -> Path:
    """`<log_path>/hub_runtime.json`, written while the hub runs."""
    return log_path / RUNTIME_FILE_NAME


# --- the control token ------------------------------------------------------------------------

TOKEN_ENV_VAR = "MLX_HUB_TOKEN"
# Shorter tokens are refused: a generated one has 43 characters, and a login form that
# lets a client try a few guesses a minute still must not meet a guessable token.
MIN_TOKEN_LENGTH = 16


class TokenError(ValueError):
    """A control token the hub must not use; the message says where it came from and why."""


def _token_from_env() -> str | None:
    """`MLX_HUB_TOKEN` (None when unset or blank); TokenError when it is too short."""
    token = os.environ.get(TOKEN_ENV_VAR, "").strip()
    if token and len(token) < MIN_TOKEN_LENGTH:
        raise TokenError(
            f"{TOKEN_ENV_VAR} has {len(token)} characters; a control token needs at least "
            f"{MIN_TOKEN_LENGTH}. Set a longer one, or unset it to use hub.token"
        )
    return token or None


def read_token(path: Path | None) -> str | None:
    """The control token for a client: `MLX_HUB_TOKEN`, else the file, else None.

    Raises TokenError when `MLX_HUB_TOKEN` is too short.
    """
    from_env = _token_from_env()
    if from_env or path is None:
        return from_env
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def load_or_create_token(path: Path) -> str:
    """The hub's control token: `MLX_HUB_TOKEN`, else the file at `path` (made if absent).

    The file is written atomically and private (0600) from its first byte: a temporary
    file created with O_EXCL and mode 0600, linked to `path` only once complete. An
    empty file (a full disk, a crash, a truncation) is replaced by a new token, with a
    warning; a short one someone wrote is refused (TokenError): replacing it would lock
    out the clients it was given to.
    """
    from_env = _token_from_env()
    if from_env:
        return from_env
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return _new_token(path, exclusive=True)
    if not token:
        import logging  # the hub's path only; `status` need not load it

        logging.getLogger("mlx_hub").warning(
            "%s was empty (a full disk or a crash while it was written?); "
            "it now holds a new control token",
            path,
        )
        return _new_token(path, exclusive=False)
    if len(token) < MIN_TOKEN_LENGTH:
        raise TokenError(
            f"{path} holds a control token of {len(token)} characters; it needs at least "
            f"{MIN_TOKEN_LENGTH}. Write a longer one, or delete the file and the hub makes one"
        )
    return token


def _new_token(path: Path, *, exclusive: bool) -> str:
    """Write a fresh token to `path`; when `exclusive` and another process won, use its."""
    import secrets  # only the hub makes tokens; clients' start-up need not load these

    from .atomic import write_atomic

    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        write_atomic(path, token + "\n", mode=0o600, exclusive=exclusive)
    except FileExistsError:  # another hub created it meanwhile, whole: use its token
        return path.read_text(encoding="utf-8").strip()
    return token


# --- hosts ------------------------------------------------------------------------------------

# Hosts that mean "every interface": a client must pick a concrete address instead.
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "[::]", ""})


def is_wildcard(host: str | None) -> bool:
    """True when a bind address means "every interface" (no single name of its own)."""
    return (host or "").strip() in WILDCARD_HOSTS


def connect_host(host: str | None) -> str:
    """The address a client should dial for a server bound to `host` (wildcards → loopback)."""
    return "127.0.0.1" if is_wildcard(host) else (host or "").strip().strip("[]")


def browse_host(host: str | None) -> str:
    """The host name to show a user in a URL (`localhost` for wildcard binds)."""
    return "localhost" if is_wildcard(host) else (host or "").strip().strip("[]")


def url_host(host: str) -> str:
    """`host` as it goes into a URL's authority (IPv6 literals bracketed)."""
    return f"[{host}]" if ":" in host else host


def base_url_for(host: str, port: int) -> str:
    """`http://host:port`, with brackets around IPv6 literals."""
    return f"http://{url_host(host)}:{port}"


# --- hub_runtime.json -------------------------------------------------------------------------

_int = attrs.validators.instance_of(int)


@attrs.define
class WorkerRecord:
    """A worker process group the hub started."""

    pid: int = attrs.field(validator=_int)
    pgid: int = attrs.field(validator=_int)
    port: int = attrs.field(validator=_int)
    create_time: float = attrs.field(default=0.0, converter=float)


@attrs.define
class RuntimeState:
    """The content of hub_runtime.json: where the running hub is, and its workers."""

    pid: int = attrs.field(validator=_int)
    host: str = attrs.field(validator=attrs.validators.instance_of(str))
    port: int = attrs.field(validator=_int)
    started_at: str = attrs.field(factory=lambda: dt.datetime.now(dt.UTC).isoformat())
    workers: dict[str, WorkerRecord] = attrs.field(factory=dict)


def runtime_to_json(state: RuntimeState) -> str:
    """The file's text for `state`."""
    return json.dumps(attrs.asdict(state)) + "\n"


def runtime_from_json(text: str) -> RuntimeState | None:
    """The state a runtime file's text records, or None when it is not one."""
    try:
        raw = json.loads(text)
        workers = {str(n): _build(WorkerRecord, w) for n, w in raw.get("workers", {}).items()}
        return _build(RuntimeState, {**raw, "workers": workers})
    except (ValueError, TypeError, AttributeError):
        return None


def read_runtime_file(path: Path) -> RuntimeState | None:
    """The state recorded at `path`, or None when there is no readable, valid file."""
    try:
        return runtime_from_json(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None


def _build(cls: type[Any], raw: Any) -> Any:
    """`cls` from a JSON object; keys this version does not know are ignored."""
    if not isinstance(raw, dict):
        raise TypeError(f"{cls.__name__}: not an object")
    known = {field.name for field in attrs.fields(cls)}
    return cls(**{k: v for k, v in raw.items() if k in known})


# --- the serve command ------------------------------------------------------------------------


def serve_command(config_path: Path) -> list[str]:
    """The foreground hub, run by this very interpreter (so the venv is the same)."""
    return [
        sys.executable,
        "-m",
        "mlx_openai_server_hub",
        "--config",
        str(config_path),
        "serve",
        "--no-stderr-log",
    ]


def package_pythonpath() -> str | None:
    """The directory holding this package when it is a source checkout, else None.

    A hub started from a checkout that was never `pip install`ed must still find the package,
    whatever its working directory.
    """
    site_dirs = [*site.getsitepackages(), site.getusersitepackages()]
    package_root = PACKAGE_DIR.parent
    installed = package_root in {Path(d).resolve() for d in site_dirs if d}
    return None if installed else str(package_root)
