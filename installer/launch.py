"""The ``installer`` console entry: a cold start's reads and a head start for hashing, then the
command line, then a quick exit.

Kept apart from :mod:`installer.cli` so that both begin before the command line's modules are
imported: the files those imports read are asked for together (edgebundle/coldstart.py), and
the head start (edgebundle/headstart.py) forks its child while the process is still small, so
the imports run on one core while the child hashes the bundle on another. The command line ends
through :func:`edgebundle.clikit.run_and_exit` (no interpreter teardown).
"""

from __future__ import annotations

import sys


def main() -> None:
    try:  # imported after the read-ahead starts, the command line after the fork (see the module docstring)
        from edgebundle import coldstart

        coldstart.begin("installer", sys.argv[1:], "installer.commands")
        from edgebundle.headstart import begin_for_argv

        begin_for_argv(sys.argv[1:])
        from edgebundle.clikit import run_and_exit
        from installer.cli import main as command_line
    except KeyboardInterrupt:  # Ctrl-C while starting: no verb ran yet (exit code as clikit.Interrupted)
        sys.stderr.write("error: interrupted; nothing was changed\n")
        sys.exit(130)

    run_and_exit(command_line)
