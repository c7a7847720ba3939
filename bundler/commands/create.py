"""bundle create: build one signed bundle (or a delta against --base) from a spec."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import click

from bundler.build import Builder, tree_size
from bundler.clikit import emit_json, handle_errors, json_option
from bundler.commands.common import plain_http_option, registry_factory
from bundler.commands.split import progress_factory
from bundler.commands.split import report as split_report
from bundler.commands.split import summary as split_summary
from bundler.delta import build_delta, full_root_digest
from bundler.errors import UsageError
from bundler.lockfile import ensure_lock
from bundler.parts import build_split, parse_size
from bundler.progress import human, percent
from bundler.root import parse_duration
from bundler.signing import load_private_key, read_passphrase
from bundler.spec import load_spec


@click.command("create")
@click.argument("spec_path", metavar="SPEC", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--key", "keys", multiple=True, required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Signing key (repeatable: each adds a signature).")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="OUT.tar for one tar file, anything else for a directory.")
@click.option("--locked", is_flag=True, help="Refuse to build unless bundles.lock exists and still matches.")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@click.option("--passphrase-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Passphrase for encrypted keys (or set EDGEBUNDLE_KEY_PASSPHRASE).")
@click.option("--split", "split_text", metavar="SIZE",
              help="Write OUT.tar as parts of at most SIZE bytes (fat32 = 4 GiB - 1) plus a signed "
                   "part index, instead of one tar (see bundle split).")
@click.option("--base", "base_path", type=click.Path(exists=True, path_type=Path),
              help="Build a delta against this full bundle (what the sites installed): it carries "
                   "only what they lack, plus patches (docs/DELTA.md).")
@click.option("--expires-in", "expires_in", metavar="DURATION", default="180d", show_default=True,
              help="How long sites accept the bundle, counted from the lock's creation time (e.g. 90d, "
                   "365d); after that they refuse it unless the operator passes --allow-expired REASON.")
@plain_http_option
@json_option
@handle_errors
def command(spec_path: Path, keys: tuple[Path, ...], output: Path, locked: bool, force: bool,
            passphrase_file: Path | None, split_text: str | None, base_path: Path | None,
            expires_in: str, plain_http: tuple[str, ...], as_json: bool) -> None:
    """Build a signed bundle from SPEC (an OCI image layout, as a directory or OUT.tar)."""
    t0 = time.monotonic()
    part_size = parse_size(split_text) if split_text else None
    lifetime = parse_duration(expires_in)
    passphrase = read_passphrase(passphrase_file)
    signing_keys = [load_private_key(k, passphrase) for k in keys]
    spec = load_spec(spec_path)
    log = (lambda s: None) if as_json else (lambda s: click.echo(f"  {s}", err=True))
    registries = registry_factory(plain_http)
    lock = ensure_lock(spec, registries, locked=locked, log=log)
    builder = Builder(spec, lock, registries, log=log, expires_in=lifetime)
    split = delta = None
    if base_path is not None:
        if part_size:
            raise UsageError("--base and --split cannot be combined yet",
                             hint="build the delta, then split it with: bundle split")
        delta = build_delta(builder, base_path, output, signing_keys, force=force, log=log)
        result, out_size = delta, delta.delta_bytes
    elif part_size:
        result, split = build_split(builder, output, signing_keys, part_size, force=force,
                                    progress=progress_factory(as_json))
        out_size = split.index.size
    else:
        result = builder.build(output, signing_keys, force=force)
        out_size = output.stat().st_size if output.is_file() else tree_size(output)
    elapsed = time.monotonic() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    summary = {"ok": True, "output": str(output), "name": spec.name, "version": spec.version,
               "root": result.root.digest, "expires": result.root.expires, "inputBytes": result.input_bytes, "bundleBytes": out_size,
               "seconds": round(elapsed, 2), "peakRssBytes": rss}
    if split:
        summary["split"] = split_summary(split)
    if delta:
        summary["delta"] = {"base": str(base_path), "fullBundleBytes": delta.full_bytes,
                            "deltaBytes": delta.delta_bytes, "checkedBytes": delta.checked_bytes,
                            "fullRoot": full_root_digest(delta.root)}
    if as_json:
        emit_json(summary)
    else:
        click.echo(f"built {output}: {spec.name} {spec.version}, {human(out_size)} from "
                   f"{human(result.input_bytes)} of inputs in {elapsed:.1f}s (peak RSS {human(rss)})")
        click.echo(f"root {result.root.digest}; expires {result.root.expires}")
        if delta:
            click.echo(f"delta against {base_path}: {human(delta.delta_bytes)} instead of "
                       f"{human(delta.full_bytes)} ({percent(delta.delta_bytes, delta.full_bytes)}); "
                       f"full target root {full_root_digest(delta.root)}")
        if split:
            split_report(split, elapsed)
