"""``landscape schedule`` from the fresh venv: the repository's scheduler, run in the checkout's root.

Inside the checkout (here from its ``src/`` subdirectory) the arguments reach
``python -m tools.scheduler`` unchanged and its exit code and messages come back: ``--help``
prints the scheduler's usage, ``--jobs 0`` its own refusal (exit 1, before it opens the DVC
repository, so nothing in the checkout is touched). Outside a checkout: one line, exit 2.
"""

from __future__ import annotations

from cli_helpers import REPO, one_line_error


def test_help_passes_through_to_the_scheduler(cli):
    proc = cli.run("schedule", "--help", cwd=REPO / "src")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m tools.scheduler") and "--no-preload" in proc.stdout


def test_the_schedulers_own_error_and_exit_code_come_back(cli):
    proc = cli.run("schedule", "--jobs", "0", "--no-preload", "validate", cwd=REPO / "src")
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: jobs must be >= 1, got 0" and proc.stdout == ""


def test_outside_a_checkout_it_stops_with_one_line(cli, tmp_path):
    line = one_line_error(cli.run("schedule", "--jobs", "2", cwd=tmp_path), "schedule")
    assert "tools/scheduler/__main__.py" in line and "run it inside a checkout of the repository" in line
