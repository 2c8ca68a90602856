"""Config section of the optional offline wake word (`pi-agent[wakeword]`)."""

from __future__ import annotations

from dataclasses import dataclass

from pi_agent.config.schema import Choice, Field, Flag, Nullable, Number, Section

# The microWakeWord models that ship inside the pymicro-wakeword wheel (nothing downloads).
WAKEWORD_MODELS = ("okay_nabu", "hey_jarvis", "hey_mycroft", "alexa")
DEFAULT_WAKEWORD_MODEL = "okay_nabu"
# After a detection, further detections are ignored for this long: one utterance, one wake.
DEFAULT_REFRACTORY_S = 2.0
MAX_REFRACTORY_S = 60.0


@dataclass(frozen=True, slots=True)
class WakewordConfig:
    """Offline wake word: model, threshold (null = the model's own) and refractory period."""

    enabled: bool
    model: str
    threshold: float | None
    refractory_s: float


WAKEWORD_SECTION = Section(
    "wakeword",
    WakewordConfig,
    [
        Field("enabled", Flag(), False, "listen for the wake word while idle"),
        Field("model", Choice(*WAKEWORD_MODELS), DEFAULT_WAKEWORD_MODEL, "bundled model"),
        Field("threshold", Nullable(Number(0, 1)), None, "score to exceed; null = model's own"),
        Field(
            "refractory_s",
            Number(0, MAX_REFRACTORY_S),
            DEFAULT_REFRACTORY_S,
            "ignore detections this long after one",
        ),
    ],
)
