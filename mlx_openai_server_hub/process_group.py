"""Process groups: signal one, stop one (SIGTERM, a grace period, SIGKILL), tell if it lives.

Workers and the hub the CLI launches each run in a session of their own, so their pid is
also their process group id, and signalling the group reaches every helper they started.
The CLI imports this module (its `status` path for `pid_alive`), so it imports only what
a command line needs at the top; the rest comes in the function that uses it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio
    import subprocess

# How long a launched process that ignores SIGTERM gets before SIGKILL, and how long
# its end is then awaited.
TERM_GRACE_SECONDS = 10.0
KILL_WAIT_SECONDS = 5.0


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send `sig` to a process group; False when it no longer exists (or is not ours)."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def group_alive(pgid: int) -> bool:
    """True while any process of the group exists (one we may not signal counts too)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """Linux only (cheap /proc read); elsewhere a zombie counts as alive."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may hold spaces.
    return stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] == "Z"


async def terminate_group(
    pgid: int,
    exited: asyncio.Event,
    grace: float,
    on_escalate: Callable[[], None] | None = None,
) -> None:
    """SIGTERM the group, SIGKILL it after `grace` seconds, return once `exited` is set.

    `exited` is set when the group's leader has been reaped. The group is sent SIGKILL
    even after a clean exit: helpers the leader started may linger. `on_escalate` is
    called when the grace period runs out.
    """
    import asyncio  # loaded already: this runs on an event loop

    if not exited.is_set():
        signal_group(pgid, signal.SIGTERM)
        try:
            await asyncio.wait_for(exited.wait(), grace)
        except TimeoutError:
            if on_escalate is not None:
                on_escalate()
    signal_group(pgid, signal.SIGKILL)
    await exited.wait()


def terminate_popen_group(
    proc: subprocess.Popen[bytes],
    grace: float = TERM_GRACE_SECONDS,
    kill_wait: float = KILL_WAIT_SECONDS,
) -> None:
    """Blocking: SIGTERM `proc`'s group, SIGKILL it after `grace` seconds, reap `proc`.

    `proc` must lead its own group (`start_new_session=True`).
    """
    import subprocess  # loaded already: the caller holds a Popen

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, kill_wait)):
        if not signal_group(proc.pid, sig):
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def group_started_since(pgid: int, created: float) -> bool:
    """True when the group has members and none is older than `created` (epoch seconds).

    Guards against pid reuse before a group recorded earlier is killed: the leader may
    be gone while helpers it started live on in its group, but those were all created
    after it. A second of slack covers the rounding of process start times.
    """
    import psutil  # only the crash reaper needs it; the CLI's `stop` must not pay for it

    members = []
    for proc in psutil.process_iter(["pid", "create_time"]):
        with contextlib.suppress(OSError):
            if os.getpgid(proc.info["pid"]) == pgid:
                members.append(proc)
    return bool(members) and all((p.info["create_time"] or 0) >= created - 1.0 for p in members)


def die_with_parent_preexec() -> Callable[[], None] | None:
    """A `preexec_fn` that has the child SIGKILLed when its parent dies, even by SIGKILL.

    Linux only (prctl PR_SET_PDEATHSIG); None elsewhere, where the hub's crash reaper
    ends leftovers at its next start instead.
    """
    if not sys.platform.startswith("linux"):
        return None
    # Loaded here, in the parent: the child between fork and exec must not import.
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None
    pr_set_pdeathsig = 1

    def die_with_parent() -> None:
        with contextlib.suppress(Exception):  # an error here would fail the start
            libc.prctl(pr_set_pdeathsig, signal.SIGKILL)

    return die_with_parent
