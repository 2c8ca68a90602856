"""Data files shipped with pi-agent: the demo recording."""
