"""bundle verify: check signatures and every blob, streaming, without unpacking."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import click

from bundler.commands.common import pubkey_option, threshold_option, trust_store
from bundler.delta import BundleBase
from edgebundle.clikit import BundleLocation, emit_json, handle_errors, json_option
from edgebundle.errors import UsageError
from edgebundle.parts import open_source
from edgebundle.progress import Progress, human
from edgebundle.rebuild import ReconstructedSource, full_root_digest
from edgebundle.signing import TrustStore
from edgebundle.verify import Policy, VerifiedBundle, Verifier, WrongBaseError


@click.command("verify")
@click.argument("bundle", type=BundleLocation())
@pubkey_option
@threshold_option
@click.option("--base", "base_path", type=click.Path(exists=True, path_type=Path),
              help="BUNDLE is a delta: also rebuild every blob of its full target from this base "
                   "bundle and check it against the signed digests.")
@click.option("--allow-expired", is_flag=True,
              help="Check a bundle past its signed expiry anyway (sites need --allow-expired REASON).")
@json_option
@handle_errors
def command(bundle: Path, pubkeys: tuple[Path, ...], threshold: int, base_path: Path | None,
            allow_expired: bool, as_json: bool) -> None:
    """Verify BUNDLE (tar, directory or media) against trusted public keys; an expired one is refused."""
    source = open_source(bundle)
    progress = Progress("verify", sum(source.members().values()), enabled=None if not as_json else False)
    trust = trust_store(pubkeys, threshold)
    vb = Verifier(trust, Policy(allow_expired=allow_expired), progress=progress).verify(source)
    progress.done()
    r = vb.root
    rebuilt = verify_delta(vb, trust, base_path, as_json) if base_path or r.is_delta else None
    if as_json:
        emit_json({"ok": True, "name": r.name, "version": r.version, "compatible": r.compatible,
                   "root": vb.root_digest, "signers": vb.signers, "blobs": len(r.blobs),
                   "bytes": progress.done_bytes, **({"delta": rebuilt} if rebuilt else {})})
    else:
        click.echo(f"OK: {r.name} {r.version} ({r.compatible}) signed by "
                   f"{', '.join(s[:16] for s in vb.signers)}; {len(r.blobs)} blobs, "
                   f"{human(progress.done_bytes)} checked")
        if rebuilt and rebuilt["rebuiltBytes"] is not None:
            click.echo(f"OK: delta against {rebuilt['base']}: all {len(r.blobs)} blobs of the full target "
                       f"rebuilt and checked ({human(rebuilt['rebuiltBytes'])}); full root {rebuilt['fullRoot']}")
        elif rebuilt:
            click.echo(f"note: this is a delta against {rebuilt['base']}; only its carried blobs were "
                       "checked. Pass --base BASE to rebuild and check the full target.")


def verify_delta(vb: VerifiedBundle, trust: TrustStore, base_path: Path | None,
                 as_json: bool) -> dict[str, Any]:
    """Check a delta against its base bundle: the base verifies, is the named one, and every
    blob of the full target rebuilds (in bounded streams) to its signed digest."""
    r = vb.root
    if not r.is_delta:
        raise UsageError(f"--base given, but {vb.source.description} is a full bundle")
    assert r.base is not None
    info: dict[str, Any] = {"base": f"{r.base.name} {r.base.version} (root {r.base.root})",
                            "fullRoot": full_root_digest(r), "rebuiltBytes": None}
    if base_path is None:
        return info
    base_vb = Verifier(trust, Policy(allow_expired=True)).verify(open_source(base_path))  # only its bytes matter
    if base_vb.root_digest != r.base.root:
        raise WrongBaseError(
            f"delta {r.name} {r.version} applies to base {r.base.name} {r.base.version} (root "
            f"{r.base.root}), but {base_path} is {base_vb.root.name} {base_vb.root.version} "
            f"(root {base_vb.root_digest})", hint="pass the base bundle the delta was built against")
    with tempfile.TemporaryDirectory(prefix="bundle-verify-") as tmp:
        base = BundleBase(base_vb.source, base_vb.root, Path(tmp))
        try:
            rebuilt = ReconstructedSource(vb.source, r, base, Path(tmp))
            progress = Progress("rebuild", r.total_size(), enabled=None if not as_json else False)
            Verifier(trust, Policy(allow_expired=True), progress=progress).verify(rebuilt)  # checked above
            progress.done()
        finally:
            base.close()
    info["rebuiltBytes"] = progress.done_bytes
    return info
