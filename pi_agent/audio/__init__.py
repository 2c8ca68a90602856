"""Pure audio core: protocol formats, codecs, resampling, and WAV file helpers."""
