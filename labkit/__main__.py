"""``python -m labkit`` and the ``labkit`` console script."""

import sys


def main(argv: list[str] | None = None) -> int:
    from labkit.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
