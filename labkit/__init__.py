"""labkit: a reproducible network lab for measuring OCPP over constrained links.

The library is importable on its own; the ``labkit`` command (labkit.cli) is a thin layer over it.
"""

__version__ = "0.1.0"
