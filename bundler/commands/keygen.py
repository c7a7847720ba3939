"""bundle keygen: make an Ed25519 signing key pair."""

from __future__ import annotations

import re
from pathlib import Path

import click

from edgebundle.clikit import emit_json, handle_errors, json_option
from edgebundle.errors import UsageError
from edgebundle.signing import generate_keypair, keyid, load_public_key, read_passphrase


@click.command("keygen")
@click.argument("name")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Directory for NAME.key and NAME.pub.")
@click.option("--passphrase-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Encrypt the private key with the passphrase in this file.")
@json_option
@handle_errors
def command(name: str, out_dir: Path, passphrase_file: Path | None, as_json: bool) -> None:
    """Write NAME.key (private, mode 0600) and NAME.pub (give this to sites)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        raise UsageError(f"key name {name[:80]!r} must be letters, digits, '.', '_' or '-' (no path)",
                         hint="choose where the files go with --out DIR")
    passphrase = read_passphrase(passphrase_file)
    key, pub = generate_keypair(name, out_dir, passphrase)
    kid = keyid(load_public_key(pub))
    if as_json:
        emit_json({"ok": True, "key": str(key), "pub": str(pub), "keyid": kid})
    else:
        click.echo(f"wrote {key} (keep secret) and {pub} (keyid {kid[:16]})")
