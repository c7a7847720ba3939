"""The ``installer`` command (edge site). One module per verb lives in installer/commands/."""

from __future__ import annotations

import click

from bundler.clikit import register_verbs
from installer import commands
from installer.audit import audited


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgebundle")
def main() -> None:
    """Install edgebundle bundles at an offline edge site.

    \b
    The technician's flow:
      installer verify BUNDLE --site site.yaml     prove it genuine, offline
      installer load   BUNDLE --site site.yaml     images -> site registry
      installer stage  BUNDLE --site site.yaml     models -> NAS
      installer status --site site.yaml
      installer audit verify --site site.yaml      prove the audit log unedited
    BUNDLE is a bundle tar, a bundle directory, a media directory or its first part.

    Exit codes: 0 ok, 1 error, 2 usage, 3 changes pending, 4 verification failed.
    """


register_verbs(main, commands, wrap=audited)  # every verb leaves an audit line
