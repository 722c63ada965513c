#!/usr/bin/env bash
# Run the reliability and security tests (tests/reliability, the soak test included,
# about 6 minutes) and print the table of figures that docs/reliability.md shows.
# Extra arguments go to pytest (e.g. `scripts/reliability-report.sh -m "not soak"`).
# Needs the test environment of scripts/test.sh (.venv with `.[test]` installed).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-.venv/bin/python}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export MLX_HUB_FIGURES="$work/figures.jsonl"
: >"$MLX_HUB_FIGURES"

status=0
"$PYTHON" -m pytest tests/reliability -p no:cacheprovider -q "$@" || status=$?

"$PYTHON" - "$MLX_HUB_FIGURES" <<'EOF'
"""Turn the JSON lines the tests wrote (tests/reliability/__init__.py: figure) into a table."""
import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8") if line.strip()]
order = ["Faults", "Bad input", "Security", "Load", "Leaks"]
rows.sort(key=lambda r: order.index(r["section"]) if r["section"] in order else len(order))


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


print()
print("| Area | Tried | Result |")
print("|---|---|---|")
for row in rows:
    print(f"| {cell(row['section'])} | {cell(row['item'])} | {cell(row['result'])} |")
print()
print(f"{len(rows)} figures from tests that passed.")
EOF

if [ "$status" -ne 0 ]; then
    echo "Some reliability tests FAILED (pytest exit $status): their figures are missing." >&2
fi
exit "$status"
