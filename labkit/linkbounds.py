"""The physical bounds of a shaped direction and the frame size labkit counts in, in a module of their own
with no dependencies: the profiles (controller side) check against them, and the recorded traces, which the
userspace engine reads on a lab's gateway where only labkit's host-side packages are installed, use them too.
"""

from __future__ import annotations

#: Ethernet frame of a full-size packet (1500 bytes of IP + 14 of Ethernet header): what HTB counts.
FRAME_BYTES = 1514

# Physical bounds of a direction. Rates: tc holds them in whole bytes per second, HTB's burst as a time in
# 64 ns ticks in 32 bits (274.9 s: at 89 bit/s two full frames already overflow it); below 1 kbit/s a single
# frame takes over 12 s, which no link labkit models comes near; 100 Gbit/s is the fastest Ethernet a gateway
# of this kind forwards (and the rate netem's ordering uses). Delays: tc gives them in whole microseconds;
# tc before iproute2 6.9 in 64 ns ticks in 32 bits (274.9 s at most); a minute is six times NB-IoT's worst
# coverage (3GPP TR 45.820 allows 10 s), and with it and 100 Gbit/s every netem limit and NFQUEUE length
# stays inside 32 bits (the delay line of a 100 Gbit/s direction holding 60 s is 2.5e9 packets).
RATE_MIN_BPS = 1_000
RATE_MAX_BPS = 100_000_000_000
DELAY_MAX_MS = 60_000.0
