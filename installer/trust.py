"""The site's current trust: the site file's keys, then every stored trust update, in order.

``spec.trust`` of the site file is trust version ``spec.trust.version`` (default 1). Each update
accepted by ``installer trust update`` (edgebundle/trustupdate.py) is kept as
``STATE_DIR/trust/<version>.dsse.json``; :func:`site_trust` is the one place the installer gets
the keys it checks bundles and part indexes against.

Invariants:
- Every stored update is re-verified against the trust before it each time trust is read: the
  state directory is not trusted to be clean.
- A stored update that does not verify is an error, never skipped: skipping it could bring back a
  revoked key.
- Updates at or below the site file's own version are superseded by the site file (an operator who
  wrote the rotated keys into the site file sets ``spec.trust.version`` to match).
"""

from __future__ import annotations

import re
from pathlib import Path

from edgebundle.digest import read_bounded
from edgebundle.errors import VerificationError
from edgebundle.signing import TrustStore
from edgebundle.trustupdate import MAX_UPDATE_BYTES, TrustState, TrustUpdateError, apply_update
from installer.safefs import UnsafePathError
from installer.site import Site
from installer.state import StateDir

TRUST_DIR = "trust"
_STORED = re.compile(r"(\d{1,15})\.dsse\.json")


def _stored(state: StateDir) -> list[tuple[int, str]]:
    """(version, file name) of the kept updates, read below the state dir without following links."""
    return sorted((int(m[1]), name) for name in state.safe.listdir([TRUST_DIR]) if (m := _STORED.fullmatch(name)))


def current_trust(site: Site, state: StateDir) -> TrustState:
    """The site file's trust, advanced through every stored update newer than it."""
    trust = TrustState(site.trust_version, TrustStore.from_files(list(site.trust_keys), site.trust_threshold))
    for version, name in _stored(state):
        if version <= trust.version:
            continue
        path = state.path / TRUST_DIR / name
        try:
            data = state.safe.read([TRUST_DIR, name], MAX_UPDATE_BYTES)
        except UnsafePathError as e:
            raise VerificationError(f"stored trust update {path} is over the {MAX_UPDATE_BYTES}-byte limit"
                                    if "limit" in e.message else e.message, hint=e.hint) from None
        if data is None:
            raise TrustUpdateError(f"stored trust update {path} vanished while it was read",
                                   hint="something else changes the state directory; stop it and run again")
        try:
            trust = apply_update(trust, data, f"stored trust update {path}")
        except VerificationError as e:
            raise TrustUpdateError(
                f"{e.message}; the state directory's trust chain is broken",
                hint="the state directory was altered, or spec.trust in the site file changed since the "
                     "update was applied: set spec.trust to the keys of the newest update and "
                     "spec.trust.version to its version (docs/SECURITY.md, key rotation)") from None
        if trust.version != version:
            raise TrustUpdateError(f"stored trust update {path} holds version {trust.version}, not {version}",
                                   hint="the state directory was altered; restore it from a backup")
    return trust


def site_trust(site: Site, state: StateDir) -> TrustStore:
    """The keys and threshold the site trusts now (bundles, part indexes)."""
    return current_trust(site, state).store


def accept_update(site: Site, state: StateDir, path: Path) -> TrustState:
    """Verify the update at ``path`` against the site's current trust and keep it."""
    data = read_bounded(Path(path), MAX_UPDATE_BYTES, "trust update")
    new = apply_update(current_trust(site, state), data, f"trust update {Path(path).name}")
    state.write_bytes(f"{TRUST_DIR}/{new.version}.dsse.json", data)
    return new


__all__ = ["TRUST_DIR", "accept_update", "current_trust", "site_trust"]
