"""API keys: where they come from, how key files are checked, a value that never shows."""

from __future__ import annotations

import hmac
import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, cast

from pi_agent.config.schema import Context, FilePath, show
from pi_agent.errors import ConfigError, Invalid

if TYPE_CHECKING:
    from pi_agent.config.loader import AgentConfig

log = logging.getLogger(__name__)

CREDENTIAL_NAME = "elevenlabs-api-key"  # systemd LoadCredential= name
API_KEY_ENV = "ELEVENLABS_API_KEY"
# Permission bits of an API key file: anything group or others may do draws a warning; a file
# anyone may write is refused, since anyone could then swap in their own key.
KEY_FILE_SHARED_BITS = stat.S_IRWXG | stat.S_IRWXO
KEY_FILE_REFUSED_BITS = stat.S_IWOTH
KEY_FILE_FIX = "chmod 600"


class KeyFile(FilePath):
    """A readable key file that not everyone may write, holding a usable key (check-config
    refuses what the daemon would; the key is never shown)."""

    def check(self, value: object, ctx: Context) -> object:
        path = cast(Path, super().check(value, ctx))
        try:
            mode = path.stat().st_mode
        except OSError as exc:  # replaced since the check above
            raise Invalid(f"{show(value)} cannot be read ({exc.strerror or exc})") from None
        refused = _writable_by_anyone(path, mode, show(value))
        if refused is not None:
            raise refused
        try:  # the key itself, as the daemon will read it: a bad one fails here, not mid-run
            _read_key(path, check_mode=False)
        except ConfigError as exc:
            what, _, expected = exc.problems[0].partition("; expected ")
            raise Invalid(what, expected or None) from None
        return path


def _writable_by_anyone(path: Path, mode: int, named: str) -> Invalid | None:
    """Return the refusal of a key file with mode `mode` if anyone may write it, else None."""
    if not mode & KEY_FILE_REFUSED_BITS:
        return None
    return Invalid(
        f"{named} is writable by anyone (mode {stat.S_IMODE(mode):04o})",
        f"a file only its owner can change (fix: {KEY_FILE_FIX} {path})",
    )


class Secret:
    """A string that never shows itself in repr, str or pickle; reveal() at the point of use."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret value; the only way to get it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled or copied")


def resolve_api_key(cfg: AgentConfig, environ: Mapping[str, str] = os.environ) -> Secret | None:
    """Return the API key from api_key_file, $CREDENTIALS_DIRECTORY/elevenlabs-api-key or
    $ELEVENLABS_API_KEY (first found wins), or None; messages never contain the key."""
    if cfg.api_key_file is not None:
        return _read_key(cfg.api_key_file, check_mode=True)
    credentials = environ.get("CREDENTIALS_DIRECTORY")
    if credentials and (Path(credentials) / CREDENTIAL_NAME).exists():
        # systemd owns the credential's copy and its mode; only the user's own file is checked.
        return _read_key(Path(credentials) / CREDENTIAL_NAME, check_mode=False)
    key = environ.get(API_KEY_ENV, "").strip()
    # An empty variable counts as unset, as shells and unit files commonly leave it.
    return _checked_key(key, f"${API_KEY_ENV}", "environment") if key else None


def _open_nonblocking(path: str, flags: int) -> int:
    """Open without blocking, so a FIFO in place of the key file fails instead of hanging."""
    return os.open(path, flags | os.O_NONBLOCK)


def _read_key(path: Path, *, check_mode: bool) -> Secret:
    """Read one key file; every error names the path, none contains its bytes.

    With `check_mode`, a file anyone may write is refused and one group or others may use is
    reported by one WARNING naming the path, its mode and the fix.
    """
    try:
        with open(path, "rb", opener=_open_nonblocking) as file:
            mode = os.fstat(file.fileno()).st_mode  # of the file read, not of a later swap
            if not stat.S_ISREG(mode):
                problem = "the API key file is not a regular file; expected a file holding the key"
                raise ConfigError([problem], str(path))
            if check_mode:
                _check_key_mode(path, mode)
            text = file.read().decode("utf-8-sig").strip()
    except OSError as exc:
        problem = f"cannot read the API key file: {exc.strerror or exc}; expected a readable file"
        raise ConfigError([problem], str(path)) from None
    except UnicodeDecodeError:
        problem = "the API key file is not UTF-8 text; expected the API key on one line"
        raise ConfigError([problem], str(path)) from None
    if not text:
        raise ConfigError(
            ["the API key file is empty; expected the API key on one line"], str(path)
        )
    return _checked_key(text, "the API key file", str(path))


def _check_key_mode(path: Path, mode: int) -> None:
    """Refuse a key file anyone may write; warn about one group or others may read."""
    refused = _writable_by_anyone(path, mode, "the API key file")
    if refused is not None:
        raise ConfigError([f"{refused.what}; expected {refused.expected}"], str(path))
    if mode & KEY_FILE_SHARED_BITS:
        log.warning(
            "the API key file %s has mode %04o: group or others may read the key; fix: %s %s",
            path,
            stat.S_IMODE(mode),
            KEY_FILE_FIX,
            path,
        )


def _checked_key(key: str, where: str, source: str) -> Secret:
    """Refuse keys with inner whitespace, control or non-ASCII characters: they would corrupt
    the request header or fail to encode in it. Messages never show the key."""
    if any(ch.isspace() or not ch.isprintable() for ch in key):
        problem = f"{where} has whitespace or control characters inside the key (not shown)"
        raise ConfigError([f"{problem}; expected the API key on one line"], source)
    if not key.isascii():
        problem = (
            f"{where} has characters that are not plain ASCII (not shown), such as the curly "
            "quotes a copy-paste brings along"
        )
        raise ConfigError(
            [f"{problem}; expected the key exactly as the dashboard shows it"], source
        )
    return Secret(key)
