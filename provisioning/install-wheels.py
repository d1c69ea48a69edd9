"""Install wheels into the running interpreter's environment (a venv on a lab host), without pip.

    <venv>/bin/python install-wheels.py INSTALLER_WHEEL WHEEL...

labkit pushes a resolved wheelhouse to each host (labkit.wheelhouse); installing it needs no resolver and no
index, so this uses pypa's ``installer`` library, imported straight from its wheel. One short process for
all the wheels: pip's own start-up alone takes seconds on a VM under software emulation. Bytecode is not
compiled here; Python caches it on first import.
"""

import sys
import sysconfig


def main(argv: list[str]) -> int:
    installer_wheel, wheels = argv[0], argv[1:]
    sys.path.insert(0, installer_wheel)
    from installer import install
    from installer.destinations import SchemeDictionaryDestination
    from installer.sources import WheelFile

    destination = SchemeDictionaryDestination(
        sysconfig.get_paths(), interpreter=sys.executable, script_kind="posix", overwrite_existing=True)
    for wheel in wheels:
        with WheelFile.open(wheel) as source:
            install(source=source, destination=destination, additional_metadata={"INSTALLER": b"labkit\n"})
        print("installed", wheel.rsplit("/", 1)[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
