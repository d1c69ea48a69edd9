"""Bursty loss: the Gilbert-Elliott model as netem's ``loss gemodel p r 1-h 1-k`` runs it, and what it promises.

The model is a two-state Markov chain per direction, *good* and *bad*, evaluated once per packet. In netem's
terms (tc-netem(8); the kernel's ``loss_gilb_ell`` in net/sched/sch_netem.c):

- ``p``: the probability of moving from good to bad, ``r``: from bad to good;
- ``1-h``: the probability that a packet is lost while the chain is bad, ``1-k``: while it is good.

The kernel starts in the good state (again at every ``tc qdisc change``) and for each packet draws two
numbers: the first decides the transition, the second the loss, with the loss probability of the state the
packet *found* (before the transition). ``GilbertElliott.lose`` does exactly that with the engine's seeded
generator, so both engines give one packet sequence the same law.

A profile writes bursty loss as ``loss: {mean: "1 %", burst: "5 packets"}``: the *simple Gilbert* case of
the model (``1-h`` = 100 %, ``1-k`` = 0 %), where a loss burst is one stay in the bad state. Its length is
geometric with mean ``1/r`` and the chain is bad a fraction ``p/(p+r)`` of the time, so ``r = 1/burst`` and
``p = mean x r / (1 - mean)`` (``from_mean_burst``). The figures for the general model (``mean_loss``,
``mean_burst``) and their spread over ``n`` packets (``spread``, the asymptotic variance of a Markov chain's
averages, which is larger than a binomial's: losses come together) are what the tests compare measurements
with.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

#: two-sided 99 % quantile of the standard normal distribution
Z99 = 2.5758293035489


@dataclass(frozen=True)
class GEParams:
    """The four probabilities of netem's ``loss gemodel`` (each 0 to 1)."""

    p: float  # good -> bad, per packet
    r: float  # bad -> good, per packet
    bad_loss: float = 1.0  # netem's 1-h: loss probability in the bad state
    good_loss: float = 0.0  # netem's 1-k: loss probability in the good state

    def __post_init__(self) -> None:
        for name in ("p", "r", "bad_loss", "good_loss"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0 or math.isnan(v):
                raise ValueError(f"{name}: {v!r} (allowed: 0 to 1)")

    @classmethod
    def from_mean_burst(cls, mean: float, burst: float) -> GEParams:
        """The simple Gilbert model losing a fraction ``mean`` of packets in bursts of ``burst`` packets on
        average (``mean`` 0 to 1 exclusive, ``burst`` at least 1). Raises ValueError when no such chain exists
        (``p`` would exceed 1: a mean loss above burst / (burst + 1))."""
        if not 0.0 < mean < 1.0:
            raise ValueError(f"mean loss {mean!r} (allowed: above 0 and below 1)")
        if not burst >= 1.0 or math.isinf(burst):
            raise ValueError(f"burst {burst!r} (allowed: 1 packet or more)")
        r = 1.0 / burst
        p = mean * r / (1.0 - mean)
        if p > 1.0:
            raise ValueError(f"a mean loss of {mean * 100:g} % in bursts of {burst:g} packet(s) needs more than one "
                             f"burst per packet (allowed: a mean of at most {burst / (burst + 1) * 100:.6g} % for "
                             f"bursts of {burst:g})")
        return cls(p=p, r=r)

    @property
    def simple(self) -> bool:
        """Whether this is the simple Gilbert case (every packet lost in the bad state, none in the good)."""
        return self.bad_loss == 1.0 and self.good_loss == 0.0

    def stationary_bad(self) -> float:
        """The long-run fraction of packets that find the chain bad (0 when it never leaves good)."""
        if self.p == 0.0:
            return 0.0
        return self.p / (self.p + self.r)

    def mean_loss(self) -> float:
        """The long-run fraction of packets lost."""
        b = self.stationary_bad()
        return (1.0 - b) * self.good_loss + b * self.bad_loss

    def burst_starts(self) -> float:
        """The long-run fraction of packets that begin a loss burst (lost, the packet before delivered)."""
        pi = (1.0 - self.stationary_bad(), self.stationary_bad())
        e = (self.good_loss, self.bad_loss)
        t = ((1.0 - self.p, self.p), (self.r, 1.0 - self.r))
        return sum(pi[s] * (1.0 - e[s]) * t[s][s2] * e[s2] for s in (0, 1) for s2 in (0, 1))

    def mean_burst(self) -> float:
        """The mean length (packets) of a run of consecutive losses; nan when the model never loses."""
        starts = self.burst_starts()
        if starts == 0.0:
            return math.nan if self.mean_loss() == 0.0 else math.inf
        return self.mean_loss() / starts

    def spread(self, n: int) -> dict[str, float]:
        """Standard deviations of the loss rate and of the mean burst length measured over ``n`` packets.

        Both are averages over a Markov chain, so their variance counts every covariance between packets:
        for additive functionals ``a``, ``b`` of the stationary chain W (here the pair of consecutive
        (state, lost) outcomes), ``sigma_ab = <a, Z b> + <b, Z a> - <a, b>`` with the fundamental matrix
        ``Z = (I - P + 1 pi)^-1`` and centred ``a``, ``b``; the mean burst is the ratio losses / burst starts
        (delta method). Valid for large n (the tests use 20,000 packets and some hundred bursts)."""
        import numpy as np

        e = np.array([self.good_loss, self.bad_loss])
        t = np.array([[1.0 - self.p, self.p], [self.r, 1.0 - self.r]])
        # Z_n = (state, lost): 4 states, index 2 * s + x
        m = np.zeros((4, 4))
        for s in (0, 1):
            for x in (0, 1):
                for s2 in (0, 1):
                    for x2 in (0, 1):
                        m[2 * s + x, 2 * s2 + x2] = t[s, s2] * (e[s2] if x2 else 1.0 - e[s2])
        # W_n = (Z_{n-1}, Z_n): 16 states, index 4 * a + b
        q = np.zeros((16, 16))
        for a in range(4):
            for b in range(4):
                for c in range(4):
                    q[4 * a + b, 4 * b + c] = m[b, c]
        pi_s = np.array([1.0 - self.stationary_bad(), self.stationary_bad()])
        mu = np.array([pi_s[s] * (e[s] if x else 1.0 - e[s]) for s in (0, 1) for x in (0, 1)])
        nu = np.array([mu[a] * m[a, b] for a in range(4) for b in range(4)])
        lost = np.array([float(b % 2) for a in range(4) for b in range(4)])
        start = np.array([float((1 - a % 2) * (b % 2)) for a in range(4) for b in range(4)])
        z = np.linalg.inv(np.eye(16) - q + np.outer(np.ones(16), nu))

        def cov(f: Any, g: Any) -> float:
            fc, gc = f - nu @ f, g - nu @ g
            return float(nu @ (fc * (z @ gc)) + nu @ (gc * (z @ fc)) - nu @ (fc * gc))

        mf, mg = float(nu @ lost), float(nu @ start)
        out = {"loss_sd": math.sqrt(max(cov(lost, lost), 0.0) / n)}
        if mg > 0:
            var_r = (cov(lost, lost) / mg**2 - 2 * mf * cov(lost, start) / mg**3
                     + mf**2 * cov(start, start) / mg**4) / n
            out["burst_sd"] = math.sqrt(max(var_r, 0.0))
        else:
            out["burst_sd"] = math.nan
        return out

    def interval99(self, n: int) -> dict[str, tuple[float, float]]:
        """99 % intervals of the loss rate and the mean burst length measured over ``n`` packets (normal
        approximation of the Markov chain's averages, see ``spread``)."""
        sd = self.spread(n)
        loss, burst = self.mean_loss(), self.mean_burst()
        return {"loss": (loss - Z99 * sd["loss_sd"], loss + Z99 * sd["loss_sd"]),
                "burst": (burst - Z99 * sd["burst_sd"], burst + Z99 * sd["burst_sd"])}

    def as_percent(self) -> dict[str, float]:
        """netem's four parameters in percent, keyed as tc prints them."""
        return {"p": self.p * 100.0, "r": self.r * 100.0, "1-h": self.bad_loss * 100.0,
                "1-k": self.good_loss * 100.0}

    @classmethod
    def from_percent(cls, d: dict[str, float]) -> GEParams:
        return cls(p=d["p"] / 100.0, r=d["r"] / 100.0, bad_loss=d["1-h"] / 100.0, good_loss=d["1-k"] / 100.0)


class GilbertElliott:
    """The loss generator of one direction: ``lose(rng)`` per packet, as the kernel's ``loss_gilb_ell``."""

    __slots__ = ("p", "r", "bad_loss", "good_loss", "bad")

    def __init__(self, params: GEParams):
        self.p, self.r = params.p, params.r
        self.bad_loss, self.good_loss = params.bad_loss, params.good_loss
        self.bad = False  # netem starts good

    def lose(self, rng: random.Random) -> bool:
        """Whether this packet is lost; then moves the chain. Two draws per packet, as the kernel: the
        transition first, then the loss with the probability of the state the packet found."""
        if self.bad:
            if rng.random() < self.r:
                self.bad = False
            return rng.random() < self.bad_loss
        if rng.random() < self.p:
            self.bad = True
        return rng.random() < self.good_loss


def runs(lost: list[bool]) -> list[int]:
    """The lengths of the runs of consecutive losses in a sequence of per-packet outcomes."""
    out: list[int] = []
    n = 0
    for x in lost:
        if x:
            n += 1
        elif n:
            out.append(n)
            n = 0
    if n:
        out.append(n)
    return out
