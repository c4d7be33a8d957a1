"""The kernel's load average, per container (kernel/sched/loadavg.c).

Every 5 seconds: active = tasks in state R or D, as fixed point (FSHIFT 11);
load = load * exp + active * (FIXED_1 - exp), rounded, with exp = EXP_1,
EXP_5, EXP_15 for the 1, 5 and 15 minute averages.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FSHIFT = 11
FIXED_1 = 1 << FSHIFT
EXP_1, EXP_5, EXP_15 = 1884, 2014, 2037
SAMPLE_SECONDS = 5.0


def calc_load(load: int, exp: int, active: int) -> int:
    """One step, exactly as the kernel does it (with its rounding)."""
    newload = load * exp + active * (FIXED_1 - exp)
    if active >= load:
        newload += FIXED_1 - 1
    return newload // FIXED_1


@dataclass
class LoadAvg:
    loads: list[int] = field(default_factory=lambda: [0, 0, 0])

    def sample(self, runnable: int) -> None:
        active = runnable * FIXED_1
        self.loads = [
            calc_load(v, e, active) for v, e in zip(self.loads, (EXP_1, EXP_5, EXP_15), strict=True)
        ]

    def values(self) -> tuple[float, float, float]:
        a, b, c = (v / FIXED_1 for v in self.loads)
        return a, b, c

    def render(self, running: int, total: int, last_pid: int) -> str:
        """/proc/loadavg: '0.52 0.58 0.59 1/123 4567' (the kernel prints 2 decimals)."""
        parts = []
        for v in self.loads:
            whole, frac = v >> FSHIFT, ((v & (FIXED_1 - 1)) * 100) >> FSHIFT
            parts.append(f"{whole}.{frac:02d}")
        return f"{' '.join(parts)} {running}/{total} {last_pid}\n"
