#!/usr/bin/env bash
# Sets up bmsd (scripts/setup.sh) and runs the whole test suite: lint, types, then pytest.
# Extra arguments go to pytest, e.g. -k config or -x.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "== ruff"; .venv/bin/ruff check .
echo "== mypy --strict"; .venv/bin/mypy bmsd
echo "== pytest"; exec .venv/bin/python -m pytest "$@"
