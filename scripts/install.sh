#!/usr/bin/env bash
# Install pi-agent as a systemd service on Raspberry Pi OS / Debian; safe to run again (updates).
# Usage: sudo scripts/install.sh [--api-key-file FILE|-] [--no-start] [--source DIR]
#        sudo scripts/install.sh --uninstall
#        scripts/install.sh --root DIR [--skip-venv] [--with-packages] ...   (scratch tree, for tests)
# See docs/install.md.
# shellcheck source=scripts/_setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/_setup.sh"
set -E
trap 'printf "error: install.sh stopped at line %s: %s\n" "$LINENO" "$BASH_COMMAND" >&2' ERR
TEMP_FILES=()
# shellcheck disable=SC2317  # called by the trap
cleanup() { [ ${#TEMP_FILES[@]} -eq 0 ] || rm -rf "${TEMP_FILES[@]}"; }
trap cleanup EXIT
umask 022
ARGS=("$@")

USAGE="usage: install.sh [--root DIR] [--api-key-file FILE|-] [--uninstall] [--no-start]
                  [--source DIR] [--skip-venv] [--with-packages]
  --root DIR        install into DIR instead of / (no accounts, packages or systemctl; for tests)
  --api-key-file F  ElevenLabs API key (one line) to store as the service's credential; - = stdin
  --uninstall       stop and remove the service, venv, credentials and user; keep /etc/pi-agent.yaml
  --no-start        enable the service but do not (re)start it
  --source DIR      the pi-agent source tree to install (default: this repository)
  --skip-venv       do not create or update the virtual environment
  --with-packages   install Debian packages even with --root"

SERVICE=pi-agent
SERVICE_USER=pi-agent
DEVICE_GROUPS=(audio gpio spi)   # ALSA, /dev/gpiochip* + /dev/gpiomem*, /dev/spidev*
CREDENTIAL=elevenlabs-api-key    # the name the daemon reads from $CREDENTIALS_DIRECTORY
# Debian packages: PyAudio and systemd-python build against the -dev ones; alsa-utils for aplay -l.
RUNTIME_DEBS=(python3 python3-venv libportaudio2 alsa-utils)
# Raspberry Pi OS packages the venv sees through --system-site-packages (lgpio: needed on the Pi 5).
OPTIONAL_DEBS=(python3-lgpio python3-spidev)
# The `aec` extra of setup.cfg, installed only as a binary wheel.
AEC_REQUIREMENT="pywebrtc-audio>=0.2,<0.3"

ROOT=""
API_KEY_FILE=""
UNINSTALL=0
START=1
SOURCE=$REPO
SKIP_VENV=0
WITH_PACKAGES=0

while [ $# -gt 0 ]; do
    case $1 in
        --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT=$2; shift 2 ;;
        --api-key-file) [ $# -ge 2 ] || die "--api-key-file needs a file (or - for stdin)"
                        API_KEY_FILE=$2; shift 2 ;;
        --uninstall) UNINSTALL=1; shift ;;
        --no-start) START=0; shift ;;
        --source) [ $# -ge 2 ] || die "--source needs a directory"; SOURCE=$2; shift 2 ;;
        --skip-venv) SKIP_VENV=1; shift ;;
        --with-packages) WITH_PACKAGES=1; shift ;;
        -h|--help) printf '%s\n' "$USAGE"; exit 0 ;;
        *) printf '%s\n' "$USAGE" >&2; die "unknown option $1" ;;
    esac
done

if [ -n "$ROOT" ]; then
    mkdir -p "$ROOT" || die "cannot create the --root directory $ROOT"
    ROOT=$(cd "$ROOT" && pwd)
    [ "$ROOT" != / ] || die "--root / is the real system; run without --root (as root)"
elif [ "$(id -u)" -ne 0 ]; then
    die "installing the service needs root; run: sudo $0 ${ARGS[*]:-}"
fi

UNIT_DIR=$ROOT/etc/systemd/system
UNIT=$UNIT_DIR/$SERVICE.service
DROPIN_DIR=$UNIT_DIR/$SERVICE.service.d
DROPIN=$DROPIN_DIR/10-api-key.conf
CONFIG=$ROOT/etc/pi-agent.yaml
CONFIG_DIR=$ROOT/etc/pi-agent
CRED_DIR=$CONFIG_DIR/credentials
CRED_FILE=$CRED_DIR/$CREDENTIAL
CRED_TARGET=/etc/pi-agent/credentials/$CREDENTIAL   # CRED_FILE as the service manager sees it
OPT_DIR=$ROOT/opt/pi-agent
APP_VENV=$OPT_DIR/venv
STAMP=$APP_VENV/.pi-agent-source

CHANGED=0   # set when a file the running service uses was written
if [ -n "$ROOT" ]; then NO_SYSTEMD_REASON="--root"; else NO_SYSTEMD_REASON="systemd is not running"; fi

# skip WHAT: say that a step does not apply to this run.
skip() { say "skipped ($1): $2"; }

# Where the service manager can be asked: the real system, with systemd as PID 1 (sd_booted(3)).
have_systemd() { [ -z "$ROOT" ] && [ -d /run/systemd/system ]; }

# put_file SRC DEST MODE [GROUP]: copy SRC to DEST only if the contents differ, then set the mode
# (and root:GROUP ownership on the real system). Never prints contents.
put_file() {
    local src=$1 dest=$2 mode=$3 group=${4:-root}
    if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
        chmod "$mode" "$dest"
        [ -n "$ROOT" ] || chown "root:$group" "$dest"
        return 1
    fi
    if [ -n "$ROOT" ]; then
        install -m "$mode" "$src" "$dest"
    else
        install -m "$mode" -o root -g "$group" "$src" "$dest"
    fi
    CHANGED=1
}

# put_dir DIR MODE: create DIR (root-owned on the real system) or fix its mode.
put_dir() {
    if [ -n "$ROOT" ]; then install -d -m "$2" "$1"; else install -d -m "$2" -o root -g root "$1"; fi
}

install_packages() {
    if [ -n "$ROOT" ] && [ "$WITH_PACKAGES" -eq 0 ]; then
        skip "--root" "Debian packages ${BUILD_DEBS[*]} ${RUNTIME_DEBS[*]} ${OPTIONAL_DEBS[*]}"
        return
    fi
    local debs=("${BUILD_DEBS[@]}" "${RUNTIME_DEBS[@]}") pkg
    for pkg in "${OPTIONAL_DEBS[@]}"; do
        if apt-cache show "$pkg" >/dev/null 2>&1; then debs+=("$pkg"); fi
    done
    ensure_debs "${debs[@]}"
    ensure_python
}

create_accounts() {
    if [ -n "$ROOT" ]; then
        skip "--root" "system user $SERVICE_USER in groups ${DEVICE_GROUPS[*]}"
        return
    fi
    local group
    for group in "${DEVICE_GROUPS[@]}"; do
        # Raspberry Pi OS has all three (udev gives them the devices); elsewhere create them so the
        # unit's SupplementaryGroups= resolves.
        getent group "$group" >/dev/null || { say "creating group $group"; groupadd --system "$group"; }
    done
    if ! getent passwd "$SERVICE_USER" >/dev/null; then
        say "creating system user $SERVICE_USER"
        useradd --system --user-group --home-dir /nonexistent --no-create-home \
            --shell /usr/sbin/nologin --comment "pi-agent voice terminal" "$SERVICE_USER"
    fi
    local have missing=()
    have=" $(id -nG "$SERVICE_USER") "
    for group in "${DEVICE_GROUPS[@]}"; do
        [[ $have == *" $group "* ]] || missing+=("$group")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "adding $SERVICE_USER to ${missing[*]}"
        usermod -a -G "$(IFS=,; echo "${missing[*]}")" "$SERVICE_USER"
    fi
}

# The project files pip installs, copied so that pip builds nothing inside the user's checkout.
stage_source() {
    local dest=$1
    cp -R "$SOURCE/setup.cfg" "$SOURCE/pyproject.toml" "$SOURCE/README.md" "$SOURCE/pi_agent" "$dest"/
    find "$dest" -name __pycache__ -prune -exec rm -rf {} +
}

source_digest() {
    (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
}

install_venv() {
    if [ "$SKIP_VENV" -eq 1 ]; then
        skip "--skip-venv" "virtual environment $APP_VENV"
        return
    fi
    put_dir "$OPT_DIR" 0755
    local stage digest
    stage=$(mktemp -d)
    TEMP_FILES+=("$stage")
    stage_source "$stage"
    digest=$(source_digest "$stage")
    if [ -x "$APP_VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$digest" ]; then
        say "virtual environment $APP_VENV is up to date"
        return
    fi
    if [ ! -x "$APP_VENV/bin/python" ]; then
        say "creating the virtual environment $APP_VENV"
        # System site packages: Raspberry Pi OS ships lgpio and spidev as Debian packages.
        "${PYTHON:-python3}" -m venv --system-site-packages "$APP_VENV" \
            || die "could not create a venv at $APP_VENV"
    fi
    say "installing pi-agent from $SOURCE into $APP_VENV (building PyAudio can take minutes)"
    local pip=("$APP_VENV/bin/python" -m pip install -q --disable-pip-version-check)
    # First the project with its dependencies, then the project again in case only its files
    # changed (pip keeps an installed project whose version number did not change).
    if ! { "${pip[@]}" "$stage" && "${pip[@]}" --force-reinstall --no-deps "$stage"; } >&2; then
        die "pip could not install pi-agent into $APP_VENV; see the messages above"
    fi
    # Echo cancellation (audio.mic_while_speaking: aec) where a binary wheel exists (64-bit
    # Raspberry Pi OS, x86_64); never built from source, and its absence is not an error.
    if "${pip[@]}" --only-binary=:all: "$AEC_REQUIREMENT" >/dev/null 2>&1; then
        say "installed echo cancellation ($AEC_REQUIREMENT)"
    else
        say "no echo cancellation wheel for this system; audio.mic_while_speaking: aec will mute"
    fi
    printf '%s\n' "$digest" >"$STAMP"
    CHANGED=1
}

install_unit() {
    mkdir -p "$UNIT_DIR"
    if put_file "$SOURCE/systemd/$SERVICE.service" "$UNIT" 0644; then
        say "installed $UNIT"
    else
        say "$UNIT is up to date"
    fi
}

install_config() {
    put_dir "$CONFIG_DIR" 0755
    if [ -e "$CONFIG" ]; then
        say "kept your configuration $CONFIG"
    else
        put_file "$SOURCE/config/pi-agent.yaml" "$CONFIG" 0640 "$SERVICE_USER" || true
        say "installed the example configuration $CONFIG: set agent.agent_id in it"
    fi
    if [ -z "$ROOT" ] && ! runuser -u "$SERVICE_USER" -- test -r "$CONFIG"; then
        say "warning: $SERVICE_USER cannot read $CONFIG; fix: chgrp $SERVICE_USER $CONFIG && chmod 0640 $CONFIG"
    fi
}

# check_key_file FILE NAME: the key must be on one line; checked without ever printing it.
check_key_file() {
    local file=$1 name=$2
    [ -s "$file" ] || die "the API key $name is empty; expected the API key on one line"
    [ "$(tr -d '\r' <"$file" | grep -c '')" -le 1 ] \
        || die "the API key $name has more than one line; expected the key on one line"
    if tr -d '\r\n' <"$file" | grep -q '[[:space:][:cntrl:]]'; then
        die "the API key $name has whitespace or control characters inside the key (not shown)"
    fi
    if tr -d '\r\n' <"$file" | LC_ALL=C grep -q '[^ -~]'; then
        die "the API key $name has characters that are not plain ASCII, such as curly quotes from a copy-paste (not shown); expected the key exactly as the dashboard shows it"
    fi
}

# read_key: validate the key given with --api-key-file (stdin is copied to a private temp file)
# before anything is installed; sets KEY_SRC.
KEY_SRC=""
read_key() {
    [ -n "$API_KEY_FILE" ] || return 0
    local name="file $API_KEY_FILE"
    KEY_SRC=$API_KEY_FILE
    if [ "$API_KEY_FILE" = - ]; then
        KEY_SRC=$(umask 077 && mktemp)
        TEMP_FILES+=("$KEY_SRC")
        name="on stdin"
        cat >"$KEY_SRC"
    fi
    if [ ! -f "$KEY_SRC" ] || [ ! -r "$KEY_SRC" ]; then
        die "cannot read the API key file $API_KEY_FILE; expected a readable file"
    fi
    check_key_file "$KEY_SRC" "$name"
}

install_credential() {
    put_dir "$CRED_DIR" 0700
    if [ -n "$KEY_SRC" ]; then
        if put_file "$KEY_SRC" "$CRED_FILE" 0600; then
            say "stored the API key as $CRED_FILE (root only, mode 0600)"
        else
            say "the API key in $CRED_FILE is unchanged"
        fi
    fi
    # LoadCredential= with a missing file fails the start, so the line exists only with a key.
    if [ -f "$CRED_FILE" ]; then
        put_dir "$DROPIN_DIR" 0755
        local dropin
        dropin=$(mktemp)
        TEMP_FILES+=("$dropin")
        printf '%s\n' "# Written by scripts/install.sh because $CRED_TARGET exists." \
            "[Service]" "LoadCredential=$CREDENTIAL:$CRED_TARGET" >"$dropin"
        if put_file "$dropin" "$DROPIN" 0644; then say "installed $DROPIN"; fi
    else
        say "no API key given: fine for public agents (add one later with --api-key-file FILE)"
        if [ -e "$DROPIN" ]; then
            rm -f "$DROPIN"
            rmdir "$DROPIN_DIR" 2>/dev/null || true
            CHANGED=1
        fi
    fi
}

start_service() {
    if ! have_systemd; then
        skip "$NO_SYSTEMD_REASON" "systemctl daemon-reload && systemctl enable --now $SERVICE"
        return
    fi
    systemctl daemon-reload
    systemctl enable --quiet "$SERVICE"
    if [ "$START" -eq 0 ]; then
        skip "--no-start" "systemctl start $SERVICE"
        return
    fi
    if [ -z "$ROOT" ] && [ -x "$APP_VENV/bin/pi-agent" ] \
        && ! "$APP_VENV/bin/pi-agent" check-config "$CONFIG" >/dev/null 2>&1; then
        die "$CONFIG is invalid (see: $APP_VENV/bin/pi-agent check-config $CONFIG); fix it and run this again"
    fi
    # Type=notify: this waits for READY=1 (or the failure).
    local action=start
    [ "$CHANGED" -eq 0 ] || action=restart
    say "systemctl $action $SERVICE"
    systemctl "$action" "$SERVICE" \
        || die "$SERVICE did not start; see: journalctl -u $SERVICE -n 50"
    say "$SERVICE is running; logs: journalctl -u $SERVICE -f"
}

uninstall() {
    if have_systemd; then
        systemctl disable --now --quiet "$SERVICE" 2>/dev/null || true
    else
        skip "$NO_SYSTEMD_REASON" "systemctl disable --now $SERVICE"
    fi
    rm -f "$UNIT" "$DROPIN"
    rmdir "$DROPIN_DIR" 2>/dev/null || true
    if have_systemd; then systemctl daemon-reload; fi
    rm -rf "$OPT_DIR"
    rm -rf "$CRED_DIR"
    rmdir "$CONFIG_DIR" 2>/dev/null || [ ! -e "$CONFIG_DIR" ] \
        || say "kept $CONFIG_DIR: it holds files of yours"
    if [ -n "$ROOT" ]; then
        skip "--root" "userdel $SERVICE_USER"
    elif getent passwd "$SERVICE_USER" >/dev/null; then
        # The kept configuration must not stay readable by whoever gets the group id next.
        if [ -e "$CONFIG" ] && [ "$(stat -c %G "$CONFIG")" = "$SERVICE_USER" ]; then
            chgrp root "$CONFIG"
        fi
        userdel "$SERVICE_USER"
        if getent group "$SERVICE_USER" >/dev/null; then groupdel "$SERVICE_USER"; fi
        say "removed the user $SERVICE_USER"
    fi
    if [ -e "$CONFIG" ]; then say "kept your configuration $CONFIG"; fi
    say "pi-agent is uninstalled"
}

for f in "systemd/$SERVICE.service" config/pi-agent.yaml setup.cfg; do
    [ -f "$SOURCE/$f" ] || die "$SOURCE is not a pi-agent source tree (no $f); pass --source DIR"
done

if [ "$UNINSTALL" -eq 1 ]; then
    uninstall
    exit 0
fi
read_key
install_packages
create_accounts
install_venv
install_unit
install_config
install_credential
start_service
say "done${ROOT:+ (into $ROOT)}"
