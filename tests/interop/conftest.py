"""The interop tests use the simulator tests' CSMS fixture."""

from tests.sim.conftest import csms_factory  # noqa: F401
