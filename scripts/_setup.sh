# Shared set-up for scripts/demo.sh and scripts/test.sh: Debian packages and the venv.
# Sourced, not run. Idempotent: installs only what is missing.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${PI_AGENT_VENV:-$REPO/.venv}

die() { printf 'error: %s\n' "$*" >&2; exit 1; }
say() { printf '==> %s\n' "$*" >&2; }

# Run a command as root: directly when we are root, else through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else return 1
    fi
}

# ensure_debs PKG...: install the Debian packages that are not installed yet.
ensure_debs() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 \
        || die "missing system packages: ${missing[*]}; this is not a Debian system, install their equivalents and retry"
    say "installing Debian packages: ${missing[*]}"
    local aptlog
    aptlog=$(mktemp)
    if ! { as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
           as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
               "${missing[@]}"; } >"$aptlog" 2>&1; then
        tail -n 5 "$aptlog" >&2
        rm -f "$aptlog"
        die "could not install the Debian packages ${missing[*]} (needs root or sudo, and a reachable package mirror). Install them with: sudo apt-get install ${missing[*]}   then run this command again."
    fi
    rm -f "$aptlog"
}

# ensure_python: a Python >= 3.11 that can make venvs.
ensure_python() {
    PYTHON=${PYTHON:-python3}
    command -v "$PYTHON" >/dev/null 2>&1 || ensure_debs python3
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "pi-agent needs Python 3.11 or newer; $PYTHON is $("$PYTHON" -V 2>&1)"
    "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || ensure_debs python3-venv
}

# ensure_venv EXTRAS: the venv with pi-agent installed (editable) plus the given extras.
ensure_venv() {
    local extras=$1 stamp
    ensure_python
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating the virtual environment $VENV"
        "$PYTHON" -m venv "$VENV" || die "could not create a venv at $VENV"
    fi
    # Reinstall only when setup.cfg changed or other extras are wanted.
    stamp="$VENV/.pi-agent-installed"
    local want
    want="$(sha256sum "$REPO/setup.cfg" | cut -d' ' -f1) $extras"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        say "installing pi-agent${extras:+[$extras]} into $VENV"
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
            -e "$REPO${extras:+[$extras]}" >&2 \
            || die "pip could not install pi-agent; see the messages above"
        echo "$want" >"$stamp"
    fi
}

# Debian packages PyAudio and systemd-python compile against (no wheels exist for them).
BUILD_DEBS=(portaudio19-dev libsystemd-dev pkg-config gcc python3-dev)
