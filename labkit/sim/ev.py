"""A small, seeded model of an EV charging on an AC station, for the ``session`` scenario's meter values.

The EV arrives with a battery of a typical size at a random state of charge and wants to reach a target.
The station delivers up to its maximum power (three-phase AC, 230 V nominal); above 80 % SoC the power
tapers linearly to 20 % of the maximum at 100 %. Voltage carries a little noise. Units: W, Wh, A, V, %.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from labkit.sim.messages import Sample

BATTERIES_KWH = (40.0, 58.0, 64.0, 77.0, 100.0)
PHASES = 3
NOMINAL_V = 230.0


@dataclass
class EV:
    capacity_wh: float
    soc_pct: float
    target_pct: float
    max_power_w: float

    @classmethod
    def arrive(cls, rng: random.Random, station_max_w: float) -> EV:
        capacity = rng.choice(BATTERIES_KWH) * 1000.0
        ev_max = rng.choice((7_400.0, 11_000.0, 22_000.0))
        soc = rng.uniform(10.0, 60.0)
        return cls(capacity, soc, rng.uniform(max(soc + 10.0, 80.0), 100.0), min(station_max_w, ev_max))

    def power_w(self) -> float:
        if self.soc_pct >= self.target_pct:
            return 0.0
        if self.soc_pct <= 80.0:
            return self.max_power_w
        return self.max_power_w * (1.0 - 0.8 * (self.soc_pct - 80.0) / 20.0)

    @property
    def full(self) -> bool:
        return self.soc_pct >= self.target_pct


class Meter:
    """The station's energy register and its view of the EV over time."""

    def __init__(self, rng: random.Random, register_wh: float = 0.0):
        self.rng = rng
        self.register_wh = register_wh

    def advance(self, ev: EV, dt_s: float) -> Sample:
        """Charge ``ev`` for ``dt_s`` seconds at its current power; return the reading at the end."""
        power = ev.power_w()
        energy = power * dt_s / 3600.0
        self.register_wh += energy
        ev.soc_pct = min(100.0, ev.soc_pct + 100.0 * energy / ev.capacity_wh)
        voltage = NOMINAL_V * (1.0 + self.rng.gauss(0.0, 0.01))
        power = ev.power_w()
        return Sample(
            energy_wh=self.register_wh,
            power_w=power,
            current_a=power / (PHASES * voltage),
            voltage_v=voltage,
            soc_pct=ev.soc_pct,
        )
