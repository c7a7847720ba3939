"""Fill the wheel cache that `bundle write-media` builds offline installers from.

`make install` runs this on the (connected) build host, so the tests and the demo write media
with no package index at all: every wheel edgebundle needs, for this machine's architecture and
the default Python versions, lands in ``--cache`` (default ``.cache/wheelhouse``). Idempotent:
a second run finds everything in the cache and downloads nothing.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

from bundler.wheelhouse import DEFAULT_PYTHONS, build_wheelhouse, parse_targets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path(".cache/wheelhouse"))
    ap.add_argument("--python-version", action="append", default=[], help="default: %s" % ", ".join(DEFAULT_PYTHONS))
    ap.add_argument("--extra", action="append", default=[],
                    help="an optional extra the media may carry too (helm: for bundles with charts)")
    args = ap.parse_args()
    targets = parse_targets([f"manylinux2014_{platform.machine()}"], args.python_version)
    with tempfile.TemporaryDirectory() as tmp:
        build_wheelhouse(Path(tmp), targets, cache=args.cache.resolve(), log=print, extras=tuple(args.extra))
    print(f"wheel cache ready: {args.cache} ({len(list(args.cache.glob('*.whl')))} wheels)")


if __name__ == "__main__":
    main()
