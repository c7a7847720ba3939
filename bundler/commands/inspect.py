"""bundle inspect: what a bundle holds (reads the root; verify checks it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from bundler.commands.common import threshold_option, trust_store
from bundler.runbook import describe
from bundler.sbom import sbom_summary
from edgebundle.clikit import BundleLocation, emit_json, handle_errors, json_option
from edgebundle.errors import UsageError
from edgebundle.parts import open_source
from edgebundle.progress import human
from edgebundle.root import parse_root
from edgebundle.verify import Policy, Verifier, root_envelope


@click.command("inspect")
@click.argument("bundle", type=BundleLocation())
@click.option("--sbom", is_flag=True,
              help="Print the bundle's CycloneDX 1.6 SBOM (JSON, on stdout, with or without --json, which then "
                   "only makes errors JSON too; component counts on stderr), after checking the signature with "
                   "--pubkey and the SBOM against its signed digest.")
@click.option("--pubkey", "pubkeys", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="With --sbom: a trusted public key (repeatable).")
@threshold_option
@json_option
@handle_errors
def command(bundle: Path, sbom: bool, pubkeys: tuple[Path, ...], threshold: int, as_json: bool) -> None:
    """Show name, version, signers, images, models, manifests and sizes of BUNDLE.

    Inspect does not check signatures or content: run 'bundle verify' for that. With --sbom it
    prints the signed SBOM of a bundle whose signature checks (docs/SUPPLY_CHAIN.md).
    """
    source = open_source(bundle)
    if sbom:
        print_sbom(source, bundle, pubkeys, threshold)
        return
    envelope = root_envelope(source)
    root, signers = parse_root(envelope.document()), envelope.signer_ids
    doc = describe(root, signers, sum(source.members().values()))
    if as_json:
        emit_json(doc)
        return
    click.echo(f"{doc['name']} {doc['version']}  compatible={doc['compatible']}  created={doc['created']}")
    click.echo(f"root {doc['root']}")
    click.echo(f"signers: {', '.join(s[:16] for s in signers) or 'NONE (unsigned)'}")
    click.echo("\nIMAGES")
    click.echo(f"  {'REF':<44} {'DIGEST':<21} {'PLATFORMS':<26} {'SIZE':>10}")
    for im in doc["images"]:
        click.echo(f"  {im['ref']:<44} {im['digest'][:19]:<21} {','.join(im['platforms']):<26} "
                   f"{human(im['size']):>10}")
        for a in im["attached"]:  # upstream's signatures, attestations, SBOMs, referrers
            click.echo(f"    + {a['kind']:<12} {a['tag'][:32] + '…' + a['tag'][71:]:<44} {a['digest'][:19]}")
    click.echo("\nMODELS")
    click.echo(f"  {'NAME':<22} {'KIND':<10} {'VERSION':<8} {'FORMAT':<12} {'QUANT':<8} {'PARAMS':>8} "
               f"{'SIZE':>10} {'STORED':>10}")
    for m in doc["models"]:
        params = f"{m['paramCount'] / 1e6:.0f}M" if m["paramCount"] else "-"
        click.echo(f"  {m['name']:<22} {m['kind']:<10} {m['version']:<8} {m['format']:<12} "
                   f"{m['quantization'] or '-':<8} {params:>8} {human(m['size']):>10} {human(m['storedSize']):>10}")
    click.echo(f"\nMANIFESTS ({len(doc['manifests'])} files)")
    for f in doc["manifests"]:
        click.echo(f"  {f['path']:<50} {human(f['size']):>10}")
    t = doc["totals"]
    click.echo(f"\nTOTAL content {human(t['contentBytes'])}, blobs stored {human(t['storedBlobBytes'])}, "
               f"bundle {human(t['bundleBytes'])}, compression saved {human(t['compressionSavedBytes'])}")
    if doc["delta"]:
        echo_delta(doc["delta"])


def print_sbom(source: Any, bundle: Path, pubkeys: tuple[Path, ...], threshold: int) -> None:
    """The SBOM of a verified bundle (signature, completeness, the SBOM's own digest) on stdout."""
    if not pubkeys:
        raise UsageError("--sbom prints the SBOM of a verified bundle only",
                         hint="pass --pubkey with the public key the bundle was signed with")
    vb = Verifier(trust_store(pubkeys, threshold), Policy(allow_expired=True)).verify(source, content=False)
    data = vb.read_sbom()
    if data is None:
        raise UsageError(f"{bundle} carries no SBOM: it was built before bundles had one",
                         hint="rebuild it with this edgebundle's bundle create")
    click.echo(data.decode())
    n = sbom_summary(json.loads(data))
    click.echo(f"SBOM: {n['images']} image platform(s) with {n['packages']} package(s), {n['models']} model(s), "
               f"{n['manifests']} manifest file(s), {n['charts']} chart(s)", err=True)


def echo_delta(d: dict[str, Any]) -> None:
    """The per-blob table of a delta: how the site gets each blob of the full target."""
    b = d["base"]
    click.echo(f"\nDELTA against {b['name']} {b['version']} (root {b['root']})")
    click.echo(f"  carries {human(d['carriedBlobBytes'])} of {human(d['fullBlobBytes'])} "
               f"({100 * d['ratio']:.1f}%); full target root {d['fullRoot']}")
    click.echo(f"  {'BLOB':<21} {'WHAT':<50} {'METHOD':<16} {'BASE':<21} {'SIZE':>10} {'CARRIED':>10} "
               f"{'RATIO':>7}  REASON")
    for r in d["blobs"]:
        base = (r["base"] or "-")[:19]
        click.echo(f"  {r['digest'][:19]:<21} {(r['what'] or '')[:50]:<50} {r['method']:<16} {base:<21} "
                   f"{human(r['size']):>10} {human(r['carriedBytes']):>10} {100 * r['ratio']:>6.1f}%  "
                   f"{r['reason'] or ''}")
