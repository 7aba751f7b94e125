"""Benchmark harness: time ours and the baseline in the same run, report the ratio.

A suite is a module ``benchmarks/bench_<suite>.py`` with a function ``cases(quick: bool)`` that
returns a list of :class:`Case`. Each case is timed as: one warm-up call of each function (Numba
compilation, caches), then timed calls, median reported. ``speedup`` is ``baseline_s / ours_s``
(> 1: ours is faster). ``accuracy`` (optional) is called once on the two results and returns a
dict of plain numbers merged into the record.

Order of the timed calls. Cases whose two warm-up calls took less than
:data:`BLOCK_BELOW_S` run in blocks: ``BLOCKS`` rounds of (pause, two untimed calls of ours,
then its timed calls; pause, two untimed calls of the baseline, then its timed calls). NumPy and
SciPy each load their own OpenBLAS, whose worker threads keep spinning for a while after a
call; a call that directly follows the other library's call runs with those threads competing
for the cores (measured: K·Q_J at twice its time right after a SciPy QR). The pause of
:data:`BLOCK_PAUSE_S` and the untimed call absorb that, so each side is timed in its steady
state, as a user calling it repeatedly sees it; alternating blocks still spread slow load
changes over both sides. A block times at least ``repeats / BLOCKS`` calls and at least
:data:`MIN_BLOCK_S` of calls (a 2 ms case: about 50), so the first calls after the pause, which
on a virtual machine wake idle vCPUs and fault memory back in, do not set the median. Slower
cases alternate call by call.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Case:
    """One comparison: ``ours()`` against ``baseline()`` on the same data."""

    name: str
    ours: Callable[[], Any]
    baseline: Callable[[], Any]
    baseline_name: str
    accuracy: Callable[[Any, Any], dict] | None = None
    repeats: int = 7
    extra: dict = field(default_factory=dict)
    #: Computes more fields from the finished record (its medians included), e.g. a time per
    #: iteration or a bandwidth; merged into the record last.
    derived: Callable[[dict], dict] | None = None


def _time(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


#: Cases faster than this (both warm-up calls together, seconds) are timed in blocks.
BLOCK_BELOW_S = 2.0
#: Rounds of (ours block, baseline block).
BLOCKS = 2
#: Pause before each block (seconds): OpenBLAS threads spin for up to ~0.1 s after a call.
BLOCK_PAUSE_S = 0.25
#: Each block times calls for at least this long (seconds; by the warm-up call's time) ...
MIN_BLOCK_S = 0.1
#: ... and at most this many calls.
MAX_CALLS_PER_BLOCK = 200


def run_case(suite: str, case: Case) -> dict:
    """Time one case; returns the JSON record."""
    t_ours, ours_out = _time(case.ours)
    t_base, base_out = _time(case.baseline)
    ours_t: list[float] = []
    base_t: list[float] = []
    gc.collect()
    gc_was = gc.isenabled()
    gc.disable()
    try:
        if t_ours + t_base < BLOCK_BELOW_S:
            per_block = -(-case.repeats // BLOCKS)
            for _ in range(BLOCKS):
                for fn, times in ((case.ours, ours_t), (case.baseline, base_t)):
                    time.sleep(BLOCK_PAUSE_S)  # the other library's BLAS threads go idle
                    fn()  # untimed: caches and this library's threads warm up
                    t1, out = _time(fn)  # untimed too: sizes the block
                    # at least MIN_BLOCK_S of timed calls, so a millisecond case's median is not
                    # set by the first calls after the pause
                    n_calls = max(per_block, min(MAX_CALLS_PER_BLOCK,
                                                 int(MIN_BLOCK_S / max(t1, 1e-6)) + 1))
                    for _ in range(n_calls):
                        t, out = _time(fn)
                        times.append(t)
                    if fn is case.ours:
                        ours_out = out
                    else:
                        base_out = out
        else:
            for _ in range(case.repeats):
                t, ours_out = _time(case.ours)
                ours_t.append(t)
                t, base_out = _time(case.baseline)
                base_t.append(t)
    finally:
        if gc_was:
            gc.enable()
    ours_s = statistics.median(ours_t)
    base_s = statistics.median(base_t)
    rec = {
        "suite": suite,
        "case": case.name,
        "ours_s": ours_s,
        "baseline": case.baseline_name,
        "baseline_s": base_s,
        "speedup": base_s / ours_s if ours_s > 0 else float("inf"),
        "repeats": case.repeats,
    }
    if case.accuracy is not None:
        rec.update(case.accuracy(ours_out, base_out))
    rec.update(case.extra)
    if case.derived is not None:
        rec.update(case.derived(rec))
    return rec


def format_table(records: list[dict]) -> str:
    """A plain-text table of the records (times in ms)."""
    extra_keys: list[str] = []
    base = {"suite", "case", "ours_s", "baseline", "baseline_s", "speedup", "repeats"}
    for r in records:
        for k in r:
            if k not in base and k not in extra_keys:
                extra_keys.append(k)
    head = ["case", "ours ms", "baseline", "baseline ms", "speedup", *extra_keys]
    rows = []
    for r in records:
        row = [r["case"], f"{r['ours_s'] * 1e3:.3f}", r["baseline"],
               f"{r['baseline_s'] * 1e3:.3f}", f"{r['speedup']:.2f}x"]
        for k in extra_keys:
            v = r.get(k, "")
            row.append(f"{v:.3g}" if isinstance(v, float) else str(v))
        rows.append(row)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*head), fmt.format(*["-" * w for w in widths])]
    lines += [fmt.format(*row) for row in rows]
    return "\n".join(lines)
