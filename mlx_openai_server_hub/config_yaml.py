"""Reading hub.yaml off disk and parsing it as YAML that has no key written twice.

Both steps raise the underlying errors (`OSError`, `UnicodeDecodeError`,
`PARSE_ERRORS`); the config loader words them for the user.
"""

from __future__ import annotations

import io
import stat
from pathlib import Path
from typing import Any

import yaml

# A hub.yaml is a few KB: anything far bigger is a mistake, not a config.
MAX_CONFIG_BYTES = 2**20

# ValueError: an integer literal too long to convert; RecursionError: absurd nesting.
PARSE_ERRORS = (yaml.YAMLError, ValueError, RecursionError)

_YAML_MERGE_TAG = "tag:yaml.org,2002:merge"


def read_config_file(source: Path) -> str:
    """The text of the regular file `source`, at most MAX_CONFIG_BYTES long."""
    # Not a FIFO (the read would block forever) nor a device such as /dev/zero (it
    # would never end): a reload must not hang or exhaust the hub's memory.
    if not stat.S_ISREG(source.stat().st_mode):
        raise OSError("not a regular file")
    with source.open("rb") as stream:
        raw = stream.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise OSError(f"larger than {MAX_CONFIG_BYTES // 2**20} MB")
    # utf-8-sig: editors on some systems save a byte-order mark.
    return raw.decode("utf-8-sig")


def parse_yaml(text: str, source_path: Path) -> Any:
    """The YAML document in `text`; its error marks name `source_path`."""
    stream = io.StringIO(text)
    stream.name = str(source_path)  # so YAML error marks name the file
    return yaml.load(stream, Loader=_UniqueKeyLoader)


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key written twice in one mapping.

    PyYAML silently keeps the last one, so a second `port:` further down would win
    without a word. Keys brought in by a merge (`<<: *base`) may still be overridden.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _YAML_MERGE_TAG:
                continue
            key = self.construct_object(key_node)
            if key in first_seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r} (first given on line {first_seen[key].line + 1})",
                    key_node.start_mark,
                )
            first_seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep)
