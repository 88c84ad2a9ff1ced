"""The installed ``landscape`` script: it comes from the wheel, lists every subcommand, and
answers usage errors with one line and exit code 2."""

from __future__ import annotations

import subprocess

from cli_helpers import one_line_error

from landscape.cli import COMMANDS


def test_the_script_runs_the_installed_wheel_not_the_checkout(cli, tmp_path):
    where = subprocess.run([str(cli.python), "-c", "import landscape, landscape.cli; print(landscape.cli.__file__)"],
                           cwd=tmp_path, env=cli.env, capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(cli.root / "venv")) and "site-packages" in where
    undeclared = subprocess.run([str(cli.python), "-c", "import pytest"], cwd=tmp_path, env=cli.env, capture_output=True, text=True)
    assert undeclared.returncode == 1 and "No module named 'pytest'" in undeclared.stderr


def test_help_lists_every_subcommand_and_the_version(cli, tmp_path):
    proc = cli.run("--help", cwd=tmp_path)
    assert proc.returncode == 0
    for name in COMMANDS:
        assert f"\n    {name}" in proc.stdout
    version = cli.run("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("landscape 0.")


def test_no_subcommand_and_an_unknown_one_exit_2(cli, tmp_path):
    bare = cli.run(cwd=tmp_path)
    assert bare.returncode == 2 and "SUBCOMMAND" in bare.stderr
    proc = cli.run("spectrum", cwd=tmp_path)
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert "\n" not in line and "invalid choice: 'spectrum'" in line and "curvature" in line
