"""The ``bundle`` command (build host). One module per verb lives in bundler/commands/."""

from __future__ import annotations

import click

from bundler import commands
from edgebundle.clikit import VerbGroup, register_verbs, run_and_exit


@click.group(cls=VerbGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgebundle")
def main() -> None:
    """Build signed, compressed, offline bundles of an AI stack (build host side).

    \b
    Typical flow:
      bundle keygen release --out keys
      bundle lint bundle.yaml                    what the site would refuse, before building
      bundle lock bundle.yaml
      bundle create bundle.yaml --key keys/release.key -o rag-edge-1.0.0.tar
      bundle verify rag-edge-1.0.0.tar --pubkey keys/release.pub
      bundle inspect rag-edge-1.0.0.tar
      bundle write-media rag-edge-1.0.0.tar /media/usb     parts, runbook, offline installer
    An upgrade that carries only what changed (a delta):
      bundle create bundle.yaml --key keys/release.key --base rag-edge-1.0.0.tar -o rag-edge-1.1.0.tar
    Publish to a central or depot registry; sites install straight from it (docs/FLEET.md):
      bundle push rag-edge-1.0.0.tar oci://depot.example:5000/rag/edge:1.0.0
      bundle pull oci://depot.example:5000/rag/edge:1.0.0 -o rag-edge-1.0.0.tar
    Rotate or revoke the keys sites trust (carry the file to each site):
      bundle trust rotate --keys keys/new.pub --version 2 --sign-with keys/release.key
          --sign-with keys/new.key -o trust-2.dsse.json

    Exit codes: 0 ok, 1 error, 2 usage, 4 verification failed, 130 interrupted (docs/EXIT_CODES.md).
    """


register_verbs(main, commands)


def run() -> None:
    """The ``bundle`` console entry: the command line, ended without interpreter teardown."""
    run_and_exit(main)
