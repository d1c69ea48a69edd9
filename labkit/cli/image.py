"""``labkit image``: the Docker host image the docker backend runs (built locally, no registry)."""

from __future__ import annotations

import click


@click.group()
def image() -> None:
    """The Docker host image (debootstrapped Debian + docker import; no registry needed)."""


def _mb(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


@image.command("build")
@click.option("--suite", default="bookworm", show_default=True, help="Debian suite to debootstrap.")
@click.option("--mirror", default=None, help="Debian mirror (default: the one apt uses here).")
@click.option("--force", is_flag=True, help="Rebuild even when the engine has this recipe's image.")
@click.pass_context
def image_build(ctx: click.Context, suite: str, mirror: str | None, force: bool) -> None:
    """Build the host image (or reuse the engine's); prints its tag."""
    from labkit.dockerimage import ensure_image

    quiet = (ctx.obj or {}).get("quiet", True)

    def progress(message: str, done: int = 0, total: int | None = None) -> None:
        if not quiet:
            click.echo(f"  {message}", err=True)

    img = ensure_image(suite, mirror, force=force, progress=progress)
    what = "built" if img.built else "cached in the engine"
    steps = ", ".join(f"{k} {v:.1f} s" for k, v in img.seconds.items()) or "nothing to do"
    click.echo(f"image {img.tag} {img.id} ({what}: {steps}; {len(img.packages)} packages, {_mb(img.size)})",
               err=True)
    click.echo(img.tag)


@image.command("show")
@click.option("--suite", default="bookworm", show_default=True, help="Debian suite of the image.")
def image_show(suite: str) -> None:
    """Show the host image (tag, id, packages) and the engine."""
    from labkit.dockerimage import engine_client, engine_facts, find_image, image_recipe

    client = engine_client()
    img = find_image(suite, client)
    key, tag = image_recipe(suite)
    f = engine_facts(client)
    click.echo(f"tag:      {tag}")
    if img is None:
        click.echo("state:    not built (labkit image build)")
    else:
        click.echo(f"id:       {img.id}")
        click.echo(f"state:    cached in the engine ({_mb(img.size)})")
        where = f" ({img.packages_file})" if img.packages and img.packages_file else ""
        click.echo(f"packages: {len(img.packages)}{where}")
    click.echo(f"recipe:   {key}")
    click.echo(f"engine:   Docker {f['server_version']} (API {f['api_version']}) at {f['url']}; "
               f"{f['operating_system']}, kernel {f['kernel_version']}, cgroup {f['cgroup_driver']} "
               f"v{f['cgroup_version']}, storage {f['storage_driver']}")
    if img is None:
        raise click.exceptions.Exit(1)
