"""Trust that ends and changes: bundle expiry, and key rotation / revocation by signed trust updates.

Also: the bundle root, as the builder writes it, is a DSSE envelope an independent verifier accepts.
"""

from __future__ import annotations

import base64
import calendar
import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from bundler.build import Builder
from bundler.cli import main as bundle_main
from bundler.commands.common import registry_factory
from bundler.lockfile import ensure_lock
from edgebundle.signing import load_private_key
from bundler.spec import load_spec
from installer.cli import main as installer_main
from tests.fixtures.bundles import (  # noqa: F401
    BundleWorld,
    bundle_factory,
    bundle_world,
    read_root_envelope,
    write_site,
)
from tests.fixtures.dsse import dsse_verify, load_pub

ROOT_TYPE = "application/vnd.edgebundle.root.v1+json"


def installer(*args: Any) -> Result:
    return CliRunner().invoke(installer_main, [str(a) for a in args], catch_exceptions=False)


def bundle(*args: Any) -> Result:
    return CliRunner().invoke(bundle_main, [str(a) for a in args], catch_exceptions=False)


def _ts(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


# -- the root envelope and its expiry -----------------------------------------------------------------

def test_root_is_dsse_and_expires_180_days_after_the_lock(bundle_factory: Any) -> None:
    b = bundle_factory()
    root = dsse_verify(json.dumps(read_root_envelope(b.path)).encode(), load_pub(b.pub), ROOT_TYPE)
    assert root["_type"] == "edgebundle.root"
    assert _ts(root["expires"]) - _ts(root["created"]) == timedelta(days=180)


def _expiring(bundle_world: BundleWorld, tmp_path: Path, seconds: float) -> tuple[Path, Path]:
    """A genuine bundle (the default spec, release key) that expires ``seconds`` from now."""
    base = bundle_world.build()
    spec = load_spec(base.spec_path)
    registries = registry_factory(())
    lock = dict(ensure_lock(spec, registries, locked=False))
    created = int(time.time()) - 86400
    lock["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))
    out = tmp_path / "expiring.tar"
    Builder(spec, lock, registries, expires_in=86400 + seconds).build(out, [load_private_key(base.key)])
    expires = _ts(json.loads(base64.b64decode(read_root_envelope(out)["payload"]))["expires"])
    assert calendar.timegm(expires.timetuple()) == created + 86400 + int(seconds)
    return out, base.pub


def test_expired_bundle_refused_unless_allowed_with_a_reason(bundle_world: BundleWorld, tmp_path: Path) -> None:
    bundle_path, pub = _expiring(bundle_world, tmp_path, 4)
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    site = write_site(site_dir, "127.0.0.1:9", trust=[pub])
    assert installer("verify", bundle_path, "--site", site).exit_code == 0  # not expired yet
    time.sleep(5)
    r = installer("verify", bundle_path, "--site", site)
    assert r.exit_code == 4 and "rag-edge 1.0.0 expired at" in r.output and "--allow-expired" in r.output
    r = installer("verify", bundle_path, "--site", site, "--allow-expired", "   ")  # a blank reason is none
    assert r.exit_code == 4 and "expired at" in r.output

    reason = "plant 7 offline until the March shipment; ticket OPS-4411"
    r = installer("verify", bundle_path, "--site", site, "--allow-expired", reason)
    assert r.exit_code == 0, r.output
    state = site_dir / "state"
    lines = [json.loads(x) for x in (state / "audit.log").read_text().splitlines()]
    assert [(x["command"], x["outcome"]) for x in lines][-3:] == [("verify", "refused"), ("verify", "refused"),
                                                               ("verify", "ok")]
    assert lines[-1]["params"]["allow_expired"] == reason
    journal = next((state / "journal").glob("*.jsonl")).read_text()
    assert reason in journal and '"expired"' in journal

    # the builder refuses to make a bundle that is expired already
    spec = load_spec(bundle_world.build().spec_path)
    lock = dict(ensure_lock(spec, registry_factory(()), locked=False))
    lock["created"] = "2020-01-01T00:00:00Z"
    try:
        Builder(spec, lock, registry_factory(()))
    except Exception as e:  # noqa: BLE001
        assert "has passed" in str(e) and "re-lock" in getattr(e, "hint", "")
    else:
        raise AssertionError("an already expired bundle was built")


# -- rotation and revocation ------------------------------------------------------------------------

def _rotate(tmp_path: Path, name: str, version: int, new_pubs: list[Path], sign_with: list[Path],
            threshold: int = 1) -> Path:
    out = tmp_path / name
    args: list[Any] = ["trust", "rotate", "--version", version, "--threshold", threshold, "-o", out]
    for p in new_pubs:
        args += ["--keys", p]
    for k in sign_with:
        args += ["--sign-with", k]
    r = bundle(*args)
    assert r.exit_code == 0, r.output
    return out


def test_rotation_from_a_to_b(bundle_world: BundleWorld, bundle_factory: Any, tmp_path: Path) -> None:
    a_key, a_pub = bundle_world.key("release")
    b_key, b_pub = bundle_world.key("rotated-b")
    c_key, c_pub = bundle_world.key("third")
    by_a, by_b = bundle_factory(), bundle_factory(key="rotated-b")
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    site = write_site(site_dir, "127.0.0.1:9", trust=[a_pub])
    assert installer("verify", by_a.path, "--site", site).exit_code == 0
    assert installer("verify", by_b.path, "--site", site).exit_code == 4

    to_b = _rotate(tmp_path, "to-b.json", 2, [b_pub], [a_key, b_key])
    # the update is a DSSE envelope signed by the current key A and the new key B
    doc = dsse_verify(to_b.read_bytes(), load_pub(a_pub), "application/vnd.edgebundle.trust.v1+json")
    assert dsse_verify(to_b.read_bytes(), load_pub(b_pub), "application/vnd.edgebundle.trust.v1+json") == doc
    assert doc["version"] == 2 and doc["threshold"] == 1 and len(doc["keys"]) == 1

    # refused: not signed by the current key (B alone), and signed by too few of a 2-of-2 site's keys
    only_b = _rotate(tmp_path, "only-b.json", 2, [b_pub], [b_key])
    r = installer("trust", "update", only_b, "--site", site)
    assert r.exit_code == 4 and "0 valid signature(s) by trusted keys, 1 required" in r.output
    strict_dir = tmp_path / "strict"
    strict_dir.mkdir()
    strict = write_site(strict_dir, "127.0.0.1:9", trust=[a_pub, c_pub], threshold=2)
    r = installer("trust", "update", to_b, "--site", strict)
    assert r.exit_code == 4 and "1 valid signature(s) by trusted keys, 2 required" in r.output
    assert not (strict_dir / "state" / "trust").exists()

    r = installer("trust", "update", to_b, "--site", site)
    assert r.exit_code == 0 and "trust version 1 -> 2" in r.output and "no longer trusted" in r.output
    assert installer("verify", by_b.path, "--site", site).exit_code == 0
    r = installer("verify", by_a.path, "--site", site)
    assert r.exit_code == 4 and "0 valid signature(s) by trusted keys, 1 required" in r.output

    # an update with an equal or lower version is refused, even when properly signed
    r = installer("trust", "update", to_b, "--site", site)
    assert r.exit_code == 4 and "trust version 2, not newer than the site's 2" in r.output
    to_c = _rotate(tmp_path, "to-c.json", 3, [b_pub, c_pub], [b_key, c_key])
    assert installer("trust", "update", to_c, "--site", site).exit_code == 0
    back_to_b = _rotate(tmp_path, "back.json", 2, [b_pub], [b_key])
    r = installer("trust", "update", back_to_b, "--site", site)
    assert r.exit_code == 4 and "not newer than the site's 3" in r.output

    # the state directory is not trusted: an edited stored update breaks the chain, nothing verifies
    stored = site_dir / "state" / "trust" / "2.dsse.json"
    stored.write_bytes(only_b.read_bytes())
    r = installer("verify", by_b.path, "--site", site)
    assert r.exit_code == 4 and "trust chain is broken" in r.output
    audit = [json.loads(x) for x in (site_dir / "state" / "audit.log").read_text().splitlines()]
    assert ("update", "ok") in [(x["command"], x["outcome"]) for x in audit]


def test_root_expiry_is_required_and_after_creation(bundle_factory: Any) -> None:
    from edgebundle.errors import VerificationError
    from edgebundle.root import parse_root

    good = base64.b64decode(read_root_envelope(bundle_factory().path)["payload"])
    doc = json.loads(good)
    for change, why in ((lambda d: d.pop("expires"), "lacks 'expires'"),
                        (lambda d: d.update(expires=d["created"]), "is not after created"),
                        (lambda d: d.update(expires="in 180 days"), "is not a time like")):
        bad = dict(doc)
        change(bad)
        try:
            parse_root(json.dumps(bad).encode())
        except VerificationError as e:
            assert why in e.message
        else:
            raise AssertionError(f"root accepted: {why}")


def test_a_planted_link_in_the_state_dirs_trust_folder_is_refused_and_nothing_is_written_through_it(
        bundle_world: BundleWorld, bundle_factory: Any, tmp_path: Path) -> None:
    """The state directory is not trusted to be clean: ``trust/`` as a link to elsewhere neither
    receives the update nor feeds stored updates back in."""
    a_key, a_pub = bundle_world.key("release")
    b_key, b_pub = bundle_world.key("rotated-b")
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    site = write_site(site_dir, "127.0.0.1:9", trust=[a_pub])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (site_dir / "state").mkdir(exist_ok=True)
    (site_dir / "state" / "trust").symlink_to(elsewhere)
    to_b = _rotate(tmp_path, "to-b.json", 2, [b_pub], [a_key, b_key])
    r = installer("trust", "update", to_b, "--site", site)
    assert r.exit_code != 0 and "trust" in r.output and "Traceback" not in r.output, r.output
    assert list(elsewhere.iterdir()) == []  # nothing written through the link
    (elsewhere / "2.dsse.json").write_bytes(to_b.read_bytes())  # a genuine update, planted behind the link
    r = installer("verify", bundle_factory().path, "--site", site)
    assert r.exit_code != 0 and str(site_dir / "state" / "trust") in r.output, r.output
