"""The README's two set-up commands exist, and CI runs exactly the README's test command."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("```sh", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_two_commands_near_the_top():
    cmds = readme_commands()
    assert len(cmds) == 2
    assert cmds[0] == "./install.sh && labkit up && labkit bench vsat"
    assert cmds[1].startswith("./install.sh --dev && ")
    assert (ROOT / "README.md").read_text().index("```sh") < 1500


def test_ci_runs_the_readme_test_command():
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert readme_commands()[1] in ci
