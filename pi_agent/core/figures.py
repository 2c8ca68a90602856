"""Summaries of measured times, as the benchmarks print them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

MS_PER_S = 1000.0


def summary(values_s: Sequence[float]) -> dict[str, Any]:
    """Median, p95, min and max in milliseconds."""
    ms = np.asarray(values_s, dtype=np.float64) * MS_PER_S
    if not ms.size:
        return {"n": 0}
    return {
        "n": int(ms.size),
        "median_ms": round(float(np.median(ms)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "min_ms": round(float(ms.min()), 1),
        "max_ms": round(float(ms.max()), 1),
    }
