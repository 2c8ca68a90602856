#!/usr/bin/env bash
# Fresh machine -> the whole test suite: installs what is missing, then ruff, mypy --strict, pytest.
# Usage: scripts/test.sh [pytest options]
source "$(dirname "${BASH_SOURCE[0]}")/_setup.sh"
# Test beds (TESTBED.md): systemd-analyze for the unit checks, espeak-ng and sox for speech fixtures.
ensure_debs "${BUILD_DEBS[@]}" systemd
ensure_venv "test"
cd "$REPO"
say "ruff"
"$VENV/bin/ruff" check pi_agent tests
"$VENV/bin/ruff" format --check pi_agent tests
say "mypy --strict"
"$VENV/bin/mypy"
say "pytest"
exec "$VENV/bin/python" -m pytest "$@"
