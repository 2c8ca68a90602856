#!/usr/bin/env bash
# Fresh machine -> running demo: installs what is missing, then runs `pi-agent demo`.
# Usage: scripts/demo.sh [pi-agent demo options]
source "$(dirname "${BASH_SOURCE[0]}")/_setup.sh"
ensure_debs "${BUILD_DEBS[@]}"
ensure_venv ""
exec "$VENV/bin/pi-agent" demo "$@"
