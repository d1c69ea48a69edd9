"""The ``labkit`` command: a thin layer over the library.

Each command lives in a small module of this package and is imported only when it runs, so that host-side
commands (``labkit csms``, ``labkit fleet``) start fast and need nothing of the analysis stack.
``main(argv, env)`` runs in-process (tests call it directly) and returns the exit status.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from labkit import __version__
from labkit.errors import LabkitError

#: command name -> "module:attribute" (modules under labkit.cli)
COMMANDS: dict[str, str] = {
    "up": "lab:up",
    "down": "lab:down",
    "status": "lab:status",
    "ssh": "lab:ssh",
    "render": "vagrant:render",
    "profiles": "shape:profiles",
    "shape": "shape:shape",
    "bench": "bench:bench",
    "report": "report:report",
    "compare": "report:compare",
    "csms": "sim:csms",
    "fleet": "sim:fleet",
    "shaper": "shape:shaper",
    "box": "vagrant:box",
    "monitor": "bench:monitor",
    "echo": "echo:echo",
    "image": "image:image",
    "hosts": "hosts:hosts",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.commands:
            return self.commands[name]
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        try:
            mod = importlib.import_module(f"labkit.cli.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"labkit.cli.{module}":
                return None  # not built yet
            raise
        return getattr(mod, attr, None)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="labkit")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
@click.pass_context
def cli(ctx: click.Context, quiet: bool) -> None:
    """labkit: a reproducible network lab for measuring OCPP over constrained links.

    \b
    labkit up --evse 3        bring up a CPO, a gateway and 3 EVSE hosts
    labkit bench vsat         baselines and OCPP timings over a VSAT link
    labkit report results/*   tables and figures from results files
    labkit down               remove everything the lab created
    """
    ctx.ensure_object(dict)
    ctx.obj.setdefault("quiet", quiet or not sys.stderr.isatty())


def main(argv: list[str] | None = None, env: dict[str, str] | None = None) -> int:
    """Run the CLI in-process; returns the exit status. ``env`` overrides os.environ for this call."""
    saved: dict[str, Any] = {}
    if env:
        for key, value in env.items():
            saved[key] = os.environ.get(key)
            os.environ[key] = value
    try:
        try:
            args = list(sys.argv[1:] if argv is None else argv)
            rv = cli.main(args=args, prog_name="labkit", standalone_mode=False, obj={"argv": ["labkit", *args]})
            # with standalone_mode=False click returns the code of a click.exceptions.Exit
            return rv if isinstance(rv, int) else 0
        except LabkitError as exc:
            click.echo(f"labkit: error: {exc}", err=True)
            return exc.exit_code
        except click.exceptions.Exit as exc:
            return exc.exit_code
        except click.exceptions.Abort:
            click.echo("labkit: interrupted", err=True)
            return 130
        except click.ClickException as exc:
            # usage errors: one line, exit status 2
            msg = exc.format_message()
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                msg = f"{exc.ctx.command_path}: {msg}"
            click.echo(f"labkit: error: {msg}", err=True)
            return exc.exit_code
        except KeyboardInterrupt:
            click.echo("labkit: interrupted", err=True)
            return 130
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
