"""``labkit bench``: baselines (ping, iperf3) and OCPP runs across profiles and fleet sizes, with provenance.

``plan`` turns flags into cells (profile x fleet size x repetition); ``runner`` runs them on a lab that is up
and writes a results directory (``results``, format in docs/results.md); ``probes`` runs ping and iperf3
over SSH; ``ocpp`` starts the CSMS and the fleets; ``monitor`` samples CPU and memory on the hosts;
``provenance`` records what ran where.
"""
