#!/usr/bin/env bash
# Fresh machine -> the whole test suite: installs what is missing, then ruff, mypy --strict, pytest.
# Usage: scripts/test.sh [pytest options]
source "$(dirname "${BASH_SOURCE[0]}")/_setup.sh"
# Test beds: systemd-analyze for unit checks; PulseAudio null sink for real-time audio tests;
# espeak-ng speaks the wake word tests' phrases.
ensure_debs "${BUILD_DEBS[@]}" systemd pulseaudio pulseaudio-utils libasound2-plugins espeak-ng
ensure_venv "test"
cd "$REPO"
say "ruff"
"$VENV/bin/ruff" check pi_agent tests scripts
"$VENV/bin/ruff" format --check pi_agent tests scripts
say "mypy --strict"
"$VENV/bin/mypy"
say "pytest"
exec "$VENV/bin/python" -m pytest "$@"
