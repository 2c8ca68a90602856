"""pi-agent: a Raspberry Pi voice terminal for ElevenLabs agents."""

__version__ = "0.1.0"
