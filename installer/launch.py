"""The ``installer`` console entry: a head start for hashing, then the command line, then a
quick exit.

Kept apart from :mod:`installer.cli` so that the head start (edgebundle/headstart.py) forks its
child before the command line's modules are imported: forking a small process is cheap, and the
imports then run on one core while the child hashes the bundle on another. The command line
ends through :func:`edgebundle.clikit.run_and_exit` (no interpreter teardown).
"""

from __future__ import annotations

import sys

from edgebundle.headstart import begin_for_argv


def main() -> None:
    begin_for_argv(sys.argv[1:])
    try:  # imported after the fork, on purpose (see the module docstring)
        from edgebundle.clikit import run_and_exit
        from installer.cli import main as command_line
    except KeyboardInterrupt:  # Ctrl-C while starting: no verb ran yet (exit code as clikit.Interrupted)
        sys.stderr.write("error: interrupted; nothing was changed\n")
        sys.exit(130)

    run_and_exit(command_line)
