"""Timing helpers every benchmark shares: one call timed, and functions timed side by side.

A 2-core VM's speed swings by the minute (other tenants, clock changes), so a setting timed
alone and another timed a minute later can differ by 30% for nothing they do. side_by_side
alternates the functions, round after round, and keeps each one's median: every setting sees
the same stretch of the machine's day.
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Callable


def timed(fn) -> tuple[float, object]:
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def turn_times(fns: dict[str, Callable], repeats: int, self_timed: bool = False,
               shuffle_seed: int | None = None) -> dict[str, list[float]]:
    """Seconds of each function's turns, alternating them round after round (round r: index r).

    self_timed: each function returns the seconds of its turn itself (it may first do work that
    is not timed). shuffle_seed: each round takes the functions in a new order drawn with this
    seed, so that none always follows the same one or always runs late in a round.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    order, draw = list(fns), random.Random(shuffle_seed)
    for _ in range(repeats):
        if shuffle_seed is not None:
            draw.shuffle(order)
        for name in order:
            times[name].append(fns[name]() if self_timed else timed(fns[name])[0])
    return times


def side_by_side(fns: dict[str, Callable], repeats: int) -> dict[str, float]:
    """Median seconds of each function, alternating them so all see the same machine load."""
    return {name: statistics.median(t) for name, t in turn_times(fns, repeats).items()}
