#!/usr/bin/env bash
# Sets up bmsd (scripts/setup.sh) and runs the daemon on the built-in simulated pack.
# Extra arguments go to `bmsd run`, e.g. --set control.tick_s=0.05. Stop with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# As the systemd unit runs it: Python's objects in glibc's heap, where the heap trim reaches
# them, so bmsd_heap_* count them too (docs/operations.md, "Memory").
export PYTHONMALLOC="${PYTHONMALLOC:-malloc}"
exec .venv/bin/bmsd run --config etc/sim.toml "$@"
