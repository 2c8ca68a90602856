"""Process hardening for the daemon: its memory stays its own, even from its own user.

Command tools run as the service's user. Without this, such a program could read the daemon's
/proc/<pid>/environ (which holds ELEVENLABS_API_KEY when the key comes from the environment) or
/proc/<pid>/mem. A process that is not dumpable has those files owned by root, cannot be
ptraced by its user and writes no core dump.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

PR_SET_DUMPABLE = 4  # linux/prctl.h
PR_GET_DUMPABLE = 3


def make_undumpable() -> bool:
    """prctl(PR_SET_DUMPABLE, 0); False (and one warning) where the kernel does not allow it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0:
            return True
        error = ctypes.get_errno()
    except (OSError, AttributeError) as exc:
        error = getattr(exc, "errno", 0) or 0
    log.warning("could not make the process undumpable (errno %d); /proc shows its memory", error)
    return False


def is_dumpable() -> bool:
    """Whether this process is dumpable (its /proc files readable by its user)."""
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))
