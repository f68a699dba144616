"""Interleaving, medians and the JSON line each figure prints."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


def interleave(rounds: int, a, b) -> tuple[list, list]:
    """Run ``a`` and ``b`` alternately ``rounds`` times, swapping which goes first each round."""
    out_a, out_b = [], []
    for r in range(rounds):
        if r % 2 == 0:
            out_a.append(a())
            out_b.append(b())
        else:
            out_b.append(b())
            out_a.append(a())
    return out_a, out_b


@dataclass
class Pair:
    value: list  # LoadResult per round, the figure
    reference: list  # LoadResult per round, what it is divided by


def figure(name: str, value: float, unit: str, reference_value: float, reference: str, target, higher: bool,
           **extra) -> dict:
    ratio = value / reference_value if reference_value else float("nan")
    return {"name": name, "value": round(value, 3), "unit": unit, "reference": reference,
            "reference_value": round(reference_value, 3), "ratio": round(ratio, 3), "target": target,
            "higher_is_better": higher, **extra}


def pair_figures(name: str, pair: Pair, reference: str, *, throughput_target, p95_target) -> list[dict]:
    tput = statistics.median(r.throughput for r in pair.value)
    ref_tput = statistics.median(r.throughput for r in pair.reference)
    p95 = statistics.median(r.pct(95) for r in pair.value) * 1000
    ref_p95 = statistics.median(r.pct(95) for r in pair.reference) * 1000
    rounds = len(pair.value)
    requests = sum(r.done for r in pair.value)
    errors = sum(r.errors for r in pair.value) + sum(r.errors for r in pair.reference)
    return [
        figure(f"{name}_throughput", tput, "req/s", ref_tput, reference, throughput_target, True,
               rounds=rounds, requests=requests, errors=errors),
        figure(f"{name}_p95", p95, "ms", ref_p95, f"{reference}, p95", p95_target, False, rounds=rounds),
    ]
