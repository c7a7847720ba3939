"""bundle split: cut a built bundle into parts that fit on FAT32 media, with a signed part index."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from bundler.split import SplitResult, split_bundle
from edgebundle.clikit import emit_json, handle_errors, json_option
from edgebundle.parts import DEFAULT_PART_SIZE, parse_size
from edgebundle.progress import Progress, human
from edgebundle.signing import load_private_key, read_passphrase

size_option = click.option(
    "--size", "size_text", default=str(DEFAULT_PART_SIZE), show_default="4 GiB - 1, FAT32-safe",
    metavar="SIZE", help="Largest part in bytes: 4294967295, 64K, 1MiB, 2G, 500MB or fat32.")


def progress_factory(as_json: bool) -> Callable[[str, int], Progress]:
    """Bars on a terminal only, never with --json."""
    return lambda label, total: Progress(label, total, enabled=False if as_json else None)


def summary(result: SplitResult) -> dict[str, Any]:
    """The JSON description of a split (also nested in ``bundle create --split --json``)."""
    idx = result.index
    return {"index": str(result.index_path),
            "name": idx.name, "version": idx.version, "root": idx.root, "bundleFile": idx.bundle_file,
            "size": idx.size, "digest": idx.digest, "partSize": idx.part_size,
            "parts": [{"file": p.file, "offset": p.offset, "size": p.size, "digest": p.digest}
                      for p in idx.parts]}


def report(result: SplitResult, seconds: float) -> None:
    """Print what a split produced (shared with ``bundle create --split``)."""
    idx = result.index
    click.echo(f"split {idx.bundle_file} ({human(idx.size)}) into {len(idx.parts)} part(s) of at most "
               f"{human(idx.part_size)} in {result.index_path.parent} ({seconds:.1f}s)")
    for p in idx.parts:
        click.echo(f"  {p.file:<40} bytes {p.offset}\u2013{p.last_byte}  {p.digest}")
    click.echo(f"part index {result.index_path.name} (signed)")


@click.command("split")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@size_option
@click.option("--key", "keys", multiple=True, required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The bundle's signing key(s): the part index is signed with the same key(s).")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the parts [default: beside BUNDLE].")
@click.option("--force", is_flag=True, help="Replace an existing part index and parts.")
@click.option("--passphrase-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Passphrase for encrypted keys (or set EDGEBUNDLE_KEY_PASSPHRASE).")
@json_option
@handle_errors
def command(bundle: Path, size_text: str, keys: tuple[Path, ...], out_dir: Path | None, force: bool,
            passphrase_file: Path | None, as_json: bool) -> None:
    """Split BUNDLE (tar, directory or parts) into NAME.tar.part000, ... of at most SIZE bytes.

    Joined in order the parts are exactly the bundle tar. NAME.parts.json lists each part's
    offset, size and sha256 and is signed (NAME.parts.sig.json) with the bundle's key, so the
    installer names a missing, short or corrupt part before it trusts anything else.
    """
    t0 = time.monotonic()
    size = parse_size(size_text)
    passphrase = read_passphrase(passphrase_file)
    signing_keys = [load_private_key(k, passphrase) for k in keys]
    result = split_bundle(bundle, out_dir or bundle.resolve().parent, size, signing_keys, force=force,
                          progress=progress_factory(as_json))
    seconds = time.monotonic() - t0
    if as_json:
        emit_json({"ok": True, **summary(result), "seconds": round(seconds, 2)})
    else:
        report(result, seconds)
