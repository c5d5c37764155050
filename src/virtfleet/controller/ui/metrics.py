"""A VM page's sparklines: the sample ring's last passes (controller/samples.py) as points of
small SVG charts, computed here and drawn by templates/metrics.html (no SVG is built in Python).

x is the pass: the newest sample on the right edge, SLOTS passes across, so a VM seen for a few
passes only fills the right-hand part. y is scaled to the chart's highest value in the window
(never below a small floor, so an idle VM is a flat line at the bottom, not noise blown up). A
sample that was not read (NaN) breaks the line: each unbroken run is a segment of its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from virtfleet.controller.samples import SLOTS, Series

WIDTH = 180
HEIGHT = 28


@dataclass(frozen=True)
class Point:
    x: float
    y: float


@dataclass(frozen=True)
class Line:
    key: str  # the series (its CSS class)
    segments: tuple[tuple[Point, ...], ...]  # unbroken runs of two or more points
    dots: tuple[Point, ...]  # runs of one sample, which a polyline would not draw


@dataclass(frozen=True)
class Spark:
    key: str
    label: str
    latest: str  # the newest value read, in words ("" if none)
    peak: str  # the chart's top
    lines: tuple[Line, ...]  # empty: nothing read in the window (no chart is drawn)


@dataclass(frozen=True)
class Metrics:
    sparks: tuple[Spark, ...]
    samples: int  # passes held for this VM (0: none yet)
    interval: float  # seconds between passes
    at: str  # when its latest answer was read, UTC
    width: int = WIDTH
    height: int = HEIGHT


def _bytes(v: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(v) < 1024:
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return f"{v:.1f} TiB"


def _percent(v: float) -> str:
    return f"{v:.1f} %"


def _rate(v: float) -> str:
    return f"{_bytes(v)}/s"


def _up(v: float) -> str:
    return "running" if v >= 0.5 else "not running"


# chart key, label, its series (drawn on one scale), how a value reads, the scale's floor
CHARTS: tuple[tuple[str, str, tuple[str, ...], Callable[[float], str], float], ...] = (
    ("cpu", "CPU (100 % = one host CPU)", ("cpu",), _percent, 1.0),
    ("memory", "memory: QEMU's RSS, balloon", ("rss", "balloon"), _bytes, 1024.0 * 1024),
    ("disk", "disk read+written", ("disk",), _rate, 1024.0),
    ("net", "network received+sent", ("net",), _rate, 1024.0),
    ("up", "running", ("up",), _up, 1.0),
)


def _line(key: str, values: Sequence[float], top: float) -> Line:
    offset = SLOTS - len(values)
    step = WIDTH / (SLOTS - 1)
    runs: list[list[Point]] = [[]]
    for k, v in enumerate(values):
        if math.isnan(v):
            if runs[-1]:
                runs.append([])
            continue
        y = HEIGHT - 1 - (HEIGHT - 2) * min(1.0, max(0.0, v / top))
        runs[-1].append(Point(round((offset + k) * step, 1), round(y, 1)))
    return Line(key, tuple(tuple(r) for r in runs if len(r) > 1),
                tuple(r[0] for r in runs if len(r) == 1))


def build(series: Series | None, interval: float) -> Metrics:
    """The charts of one VM's samples; no samples (None): no charts."""
    if series is None:
        return Metrics((), 0, interval, "")
    sparks = []
    for key, label, names, words, floor in CHARTS:
        read = [v for n in names for v in series.values[n] if not math.isnan(v)]
        if not read:
            sparks.append(Spark(key, label, "", "", ()))
            continue
        top = max(floor, *read)
        latest = " / ".join(words(v) for n in names
                            if not math.isnan(v := series.values[n][-1]))
        sparks.append(Spark(key, label, latest, "" if key == "up" else words(top),
                            tuple(_line(n, series.values[n], top) for n in names)))
    at = (datetime.fromtimestamp(series.at, UTC).strftime("%H:%M:%S")
          if series.at is not None else "")
    return Metrics(tuple(sparks), series.samples, interval, at)
