"""Summary statistics of per-iteration times, as trtexec reports them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

PERCENTILES = (90, 95, 99)


@dataclass(frozen=True)
class Stats:
    """Summary of one series of times, in milliseconds.

    Attributes:
        min, max, mean, median, p90, p95, p99, std: the usual figures.
        cov: coefficient of variance, std / mean (0.05 is 5 %).
        count: number of samples.
    """

    min: float
    max: float
    mean: float
    median: float
    p90: float
    p95: float
    p99: float
    std: float
    cov: float
    count: int

    @classmethod
    def of(cls, values_ms: Sequence[float]) -> "Stats":
        """Summarize a series; an empty one gives zeros."""
        a = np.asarray(values_ms, dtype=np.float64)
        if a.size == 0:
            return cls(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0)
        p90, p95, p99 = (float(np.percentile(a, p)) for p in PERCENTILES)
        mean = float(a.mean())
        std = float(a.std())
        return cls(float(a.min()), float(a.max()), mean, float(np.median(a)), p90, p95, p99, std,
                   std / mean if mean > 0 else 0.0, int(a.size))

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        """trtexec's one-line form: ``min = .. ms, max = .., mean = .., median = .., percentile(90%) = ..``."""
        return (
            f"min = {self.min:.5g} ms, max = {self.max:.5g} ms, mean = {self.mean:.5g} ms, "
            f"median = {self.median:.5g} ms, percentile(90%) = {self.p90:.5g} ms, "
            f"percentile(95%) = {self.p95:.5g} ms, percentile(99%) = {self.p99:.5g} ms"
        )
