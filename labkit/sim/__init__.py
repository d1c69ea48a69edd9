"""OCPP simulators: a CSMS (``labkit csms``) and a charging-station fleet (``labkit fleet``).

They know nothing of labs, Vagrant or namespaces: each is a process pointed at a URL or a listen address,
writing its samples to CSV files (docs/results.md, ``ocpp/*.csv``) and a JSON status file.

Modules: ``settings`` (versions, WebSocket and validation settings), ``samples`` (CSV sinks, status file),
``timing`` (the timed ChargePoint used by the fleet), ``messages`` (payloads per OCPP version),
``ev`` (the EV/charging model of the session scenario), ``scenarios``, ``station`` (one station's
connection, reconnect and offline queue), ``fleet`` and ``csms``.

Only the standard library, ``ocpp`` (with its ``jsonschema``) and ``websockets`` are imported here.
"""
