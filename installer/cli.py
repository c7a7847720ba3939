"""The ``installer`` command (edge site). One module per verb lives in installer/commands/."""

from __future__ import annotations

import click

from edgebundle.clikit import VerbGroup, register_verbs
from installer import commands
from installer.audit import audited


@click.group(cls=VerbGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgebundle")
def main() -> None:
    """Install edgebundle bundles at an offline edge site.

    \b
    The technician's flow (or all of it at once: installer install BUNDLE --site site.yaml):
      installer verify  BUNDLE --site site.yaml      prove it genuine, offline
      installer load    BUNDLE --site site.yaml      images -> site registry
      installer stage   BUNDLE --site site.yaml      models -> NAS
      installer plan    BUNDLE --site site.yaml -o plan.json
      installer approve plan.json --operator NAME    shows the plan, asks y/N
      installer apply   plan.json --site site.yaml   waits for health, rolls back on failure
      installer status | history | rollback [--to N] --site site.yaml
      installer rollout status | resume | promote | abort --site site.yaml   canary (docs/ROLLOUT.md)
      installer audit verify --site site.yaml        prove the audit log unedited
      installer prune --site site.yaml --operator NAME   delete what no recent deployment uses
      installer trust update trust-2.dsse.json --site site.yaml   apply a signed key rotation
    BUNDLE is a bundle tar, a bundle directory, a delta, a media directory or its first part,
    or oci://HOST[:PORT]/REPO:TAG (a bundle `bundle push` published to a depot; docs/FLEET.md).

    Exit codes: 0 ok, 1 error, 2 usage, 3 changes pending, 4 verification failed,
    130 interrupted (docs/EXIT_CODES.md).
    """


register_verbs(main, commands, wrap=audited)  # every verb leaves an audit line
