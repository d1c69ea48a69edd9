"""``python -m labkit`` and the ``labkit`` console script."""

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--version"]:
        # what provisioning runs on every host over SSH: answer without importing the CLI (click and the
        # commands cost about 0.1 s of CPU per host, seconds for a lab of 50 hosts); same text as click's
        from labkit import __version__

        print(f"labkit, version {__version__}")
        return 0
    from labkit.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
