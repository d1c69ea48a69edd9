"""The userspace shaping engine, for gateways whose kernel has no sch_netem.

``labkit shaper run --config FILE`` runs it on the gateway: NFQUEUE rules (one queue per direction) hand it
every forwarded packet; it holds each for the profile's delay and jitter, drops, corrupts or duplicates with
the profile's probabilities, and lets the kernel's HTB apply the rate afterwards. ``netlink`` speaks
nfnetlink_queue over a raw socket; ``engine`` is the reader, the releaser and the status file.
"""
