"""``labkit render`` (print the lab's Vagrantfile) and ``labkit box`` (the locally built test box)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from labkit.errors import ConfigError


def _load_lab(lab_file: str | None, name: str | None, evse: str | None):
    from labkit.model import build_lab, load_spec

    spec = load_spec(lab_file, {"name": name, "evse": evse})
    return build_lab(spec)


@click.command()
@click.option("-f", "--file", "lab_file", type=click.Path(dir_okay=False), help="Lab file (YAML).")
@click.option("--provider", type=click.Choice(["virtualbox", "libvirt"]), default=None,
              help="Default provider written into the Vagrantfile (default: the lab file's, else libvirt).")
@click.option("--name", default=None, help="Lab name.")
@click.option("--evse", default=None, help="Number of EVSE hosts.")
def render(lab_file: str | None, provider: str | None, name: str | None, evse: str | None) -> None:
    """Print the Vagrantfile of a lab (what `labkit up --backend vagrant` writes)."""
    from labkit.backends.vagrant import VagrantBackend
    from labkit.labdir import LabDir

    lab = _load_lab(lab_file, name, evse)
    provider = provider or (lab.spec.vagrant.provider if lab.spec.vagrant.provider != "auto" else "libvirt")
    labdir = LabDir(lab.name)
    click.echo(VagrantBackend().render(lab, provider, labdir), nl=False)


@click.group()
def box() -> None:
    """The small Debian box the Vagrant end-to-end test boots (built locally, no download)."""


@box.command("build")
@click.option("--suite", default="bookworm", show_default=True, help="Debian suite to debootstrap.")
@click.option("--mirror", default=None, help="Debian mirror (default: the one apt uses here).")
@click.option("--force", is_flag=True, help="Rebuild even when the cache holds this recipe.")
@click.option("--driver", type=click.Choice(["qemu", "kvm"]), default=None,
              help="libvirt domain type written to --lab-file (default: kvm where it works, else qemu).")
@click.option("--lab-file", type=click.Path(dir_okay=False), default=None,
              help="Write a lab file that uses the box here.")
@click.pass_context
def box_build(ctx: click.Context, suite: str, mirror: str | None, force: bool, driver: str | None,
              lab_file: str | None) -> None:
    """Build (or reuse from /var/cache/labkit) the test box, add it to Vagrant and libvirt's pool."""
    from labkit.backends.vagrant_cmd import kvm_usable
    from labkit.testbox import build_test_box

    quiet = (ctx.obj or {}).get("quiet", True)

    def progress(message: str, done: int = 0, total: int | None = None) -> None:
        if not quiet:
            click.echo(f"  {message}", err=True)

    tb = build_test_box(suite, mirror, force=force, progress=progress)
    driver = driver or ("kvm" if kvm_usable()[0] else "qemu")
    what = "built" if tb.built else "from the cache"
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in tb.seconds.items()) or "nothing to do"
    click.echo(f"box {tb.name} {tb.version} ({what}: {tb.dir}; {steps})", err=True)
    text = tb.lab_yaml(driver)
    if lab_file:
        if Path(lab_file).exists() and Path(lab_file).is_dir():
            raise ConfigError(f"--lab-file: {lab_file} is a directory")
        Path(lab_file).write_text(text)
    else:
        sys.stdout.write(text)
