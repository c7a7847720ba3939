"""bundle create: build one signed bundle (or a delta against --base) from a spec."""

from __future__ import annotations

import resource
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from bundler.build import Builder, tree_size
from bundler.commands.common import current_lock, lockfile_option, plain_http_option, registry_factory
from bundler.commands.split import progress_factory
from bundler.commands.split import report as split_report
from bundler.commands.split import summary as split_summary
from bundler.delta import build_delta
from bundler.lint import check_deployable
from bundler.lockfile import ensure_lock
from bundler.spec import load_spec
from bundler.split import build_split
from edgebundle.clikit import emit_json, handle_errors, json_option
from edgebundle.diskspace import disk_full_error, is_disk_full, require_free
from edgebundle.errors import UsageError
from edgebundle.parts import parse_size
from edgebundle.progress import Progress, human, percent
from edgebundle.rebuild import full_root_digest
from edgebundle.root import parse_duration
from edgebundle.signing import load_private_key, read_passphrase

#: What create, create --split and create --base leave beside OUT while they work.
PARTIAL_SUFFIXES = (".partial", ".partial.d", ".unsplit", ".target.partial", ".delta.partial", ".scratch")


def _build(builder: Builder, output: Path, signing_keys: list[Any], part_size: int | None, base_path: Path | None,
           force: bool, log: Callable[[str], None], as_json: bool) -> tuple[Any, int, Any, Any]:
    """Build a full bundle, a split one, or a delta: (result, output bytes, split, delta)."""
    if base_path is not None:
        if part_size:
            raise UsageError("--base and --split cannot be combined yet",
                             hint="build the delta, then split it with: bundle split")
        delta = build_delta(builder, base_path, output, signing_keys, force=force, log=log)
        return delta, delta.delta_bytes, None, delta
    if part_size:
        result, split = build_split(builder, output, signing_keys, part_size, force=force,
                                    progress=progress_factory(as_json))
        return result, split.index.size, split, None
    result = builder.build(output, signing_keys, force=force)
    return result, output.stat().st_size if output.is_file() else tree_size(output), None, None


def input_total(spec: Any, lock: dict[str, Any], registries: Callable[[str], Any]) -> int:
    """Bytes the build reads: every model file (from the lock), every blob of every image carried
    (from the image manifests, which are small), so the progress line can give an ETA."""
    from edgebundle import mediatypes
    from edgebundle.ocinames import parse_reference
    from edgebundle.root import load_json_bounded

    total = sum(f["size"] for m in lock["models"] for f in m["files"])
    locked = {li["ref"]: li for li in lock["images"]}
    for image in spec.images:
        li, ref = locked[image.ref], parse_reference(image.ref)
        reg = registries(ref.registry)
        digests = [li["digest"]]
        if mediatypes.is_index(li["mediaType"]):
            one = len(image.platforms) == 1 and len(li["platforms"]) > 1  # create carries just that one
            digests = [li["platforms"][image.platforms[0]]] if one else list(li["platforms"].values())
        for d in digests:
            doc = load_json_bounded(reg.get_manifest(ref.repository, d).data, f"manifest of {image.ref}")
            total += sum(int(b.get("size", 0)) for b in [doc.get("config") or {}, *doc.get("layers", [])])
    return total


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
@lockfile_option
@click.option("--expires-in", "expires_in", metavar="DURATION", default="180d", show_default=True,
              help="How long sites accept the bundle, counted from the lock's creation time (e.g. 90d, "
                   "365d); after that they refuse it unless the operator passes --allow-expired REASON.")
@plain_http_option
@json_option
@handle_errors
def command(spec_path: Path, keys: tuple[Path, ...], output: Path, locked: bool, force: bool,
            passphrase_file: Path | None, split_text: str | None, base_path: Path | None,
            lockfile: Path | None, expires_in: str, plain_http: tuple[str, ...], as_json: bool) -> None:
    """Build a signed bundle from SPEC (an OCI image layout, as a directory or OUT.tar)."""
    t0 = time.monotonic()
    part_size = parse_size(split_text) if split_text else None
    lifetime = parse_duration(expires_in)
    passphrase = read_passphrase(passphrase_file)
    signing_keys = [load_private_key(k, passphrase) for k in keys]
    spec = load_spec(spec_path)
    registries = registry_factory(plain_http)
    check_deployable(spec, current_lock(spec, lockfile), registries)  # before anything is fetched or written
    say = (lambda s: None) if as_json else (lambda s: click.echo(f"  {s}", err=True))
    lock = ensure_lock(spec, registries, locked=locked, log=say, path=lockfile)
    bar = Progress("create", input_total(spec, lock, registries), enabled=False if as_json else None)

    def log(line: str) -> None:
        """One progress line on a terminal (bytes, rate, ETA); the per-item lines elsewhere."""
        if bar.enabled:
            bar(builder.input_bytes - bar.done_bytes)
        else:
            say(line)

    builder = Builder(spec, lock, registries, log=log, expires_in=lifetime)
    models_bytes = sum(f["size"] for m in lock["models"] for f in m["files"])
    # A lower bound (images come on top): the models in the work directory, and again in OUT.tar.
    require_free(output.parent, models_bytes * (2 if output.suffix == ".tar" and not part_size else 1),
                 f"bundle {spec.name} {spec.version} (its models alone)")
    try:
        result, out_size, split, delta = _build(builder, output, signing_keys, part_size, base_path, force, log,
                                                as_json)
    except OSError as e:
        if not is_disk_full(e):
            raise
        for suffix in PARTIAL_SUFFIXES:  # a full disk: leave nothing half-written (Ctrl-C keeps blobs)
            leftover = output.with_name(output.name + suffix)
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        raise disk_full_error(e, where=output) from None
    finally:
        bar.done()
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
