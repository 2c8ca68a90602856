"""The daemon's states, shared by the state machine, LEDs, systemd STATUS and the control socket."""

from __future__ import annotations

import enum


class State(enum.StrEnum):
    """What the terminal is doing; each has an LED pattern and a STATUS= line."""

    IDLE = "idle"  # waiting for a trigger; no socket open
    CONNECTING = "connecting"  # trigger seen, opening the conversation
    LISTENING = "listening"  # conversation live, waiting for the user
    USER_SPEAKING = "user_speaking"  # the user is talking (button held or voice detected)
    THINKING = "thinking"  # the user's turn ended, the agent has not answered yet
    AGENT_SPEAKING = "agent_speaking"  # agent audio is playing
    ENDING = "ending"  # letting the last audio play, closing the socket
    ERROR = "error"  # something failed; shown for a few seconds, then idle
    MUTED = "muted"  # microphone muted by the user; triggers ignored


STATE_NAMES = tuple(s.value for s in State)
