"""What the hub and its download child say to each other, and the errors a download ends in.

Kept apart from the child's code (`download_process`, `hf_fetch`) so the hub's process
never imports huggingface_hub: it only spawns the child and reads its events.

- stdin: one JSON line, a `DownloadRequest`. The hub then keeps stdin open; end of file
  means the hub is gone, and the download stops (no orphan downloads, on any OS).
- SIGTERM stops it too: in-flight files are abandoned, finished files stay in the
  cache, so the next try resumes.
- stdout: one JSON object per line, `{"event": ...}`: `listing`, `start`, `bytes`,
  `file_done`, then exactly one of `done` or `error` (`kind`, `message`).
"""

from __future__ import annotations

import json

import attrs
import cattrs

from .errors import HubError

# huggingface_hub reads the body in 10 MiB chunks and reports each chunk only
# once it is full, so a file under 10 MiB shows no progress until it is done
# and a slow link shows none for minutes. Smaller chunks make progress real.
READ_CHUNK_BYTES = 256 * 1024
# Downloads are background work: running workers and the hub come first for the CPU.
NICENESS = 10

_STATUS_OF_KIND = {
    "offline": 503,
    "not_found": 404,
    "revision_not_found": 404,
    "gated": 403,
    "network": 502,
    "disk_full": 507,
    "cancelled": 503,
    "failed": 502,
}


class DownloadError(HubError):
    """A download that cannot finish, with a `kind` scripts and the page can use."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message, status=_STATUS_OF_KIND.get(kind, 502))
        self.kind = kind


@attrs.frozen
class DownloadRequest:
    """What the hub asks the child to fetch, and how.

    No token: the child finds it the way huggingface_hub does (`HF_TOKEN`, the token
    file), in the environment the hub gives it (the model's `env` included).
    """

    repo_id: str
    revision: str | None
    endpoint: str
    cache_dir: str
    parallel_files: int = 4
    read_chunk_bytes: int = READ_CHUNK_BYTES
    niceness: int = NICENESS


def encode_request(request: DownloadRequest) -> bytes:
    """The stdin line the hub writes."""
    return json.dumps(cattrs.unstructure(request)).encode() + b"\n"


def decode_request(line: bytes) -> DownloadRequest:
    """The child's side of `encode_request`."""
    return cattrs.structure(json.loads(line), DownloadRequest)
