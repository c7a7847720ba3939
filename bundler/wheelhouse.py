"""The offline installer a stick carries: edgebundle's own wheel and every dependency, per platform.

Built on the build host (which has an index or a wheel cache) so that the site installs with
``pip --no-index`` from the stick alone (bundler/runbook.py writes the bootstrap that does it).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgebundle.errors import EdgebundleError, UsageError
from edgebundle.usercache import user_cache


class WheelhouseError(EdgebundleError):
    """The offline installer cannot be built (no wheel for a platform, pip failed)."""


DEFAULT_PLATFORMS = ("manylinux2014_x86_64",)


DEFAULT_PYTHONS = ("3.11", "3.12")


#: ``--target-platform`` shorthands.
PLATFORM_ALIASES = {"x86_64": "manylinux2014_x86_64", "amd64": "manylinux2014_x86_64",
                    "aarch64": "manylinux2014_aarch64", "arm64": "manylinux2014_aarch64"}


_ARCHES = ("x86_64", "aarch64", "i686", "ppc64le", "s390x", "armv7l")


#: The project's own packages, copied out of the source tree to build the edgebundle wheel.
PACKAGES = ("edgebundle", "bundler", "installer")


_SOURCE_FILES = ("pyproject.toml", "setup.cfg", "setup.py", "README.md", "LICENSE", "MANIFEST.in")


@dataclass(frozen=True)
class Target:
    """A platform the offline installer must run on: a pip platform tag and a CPython version."""

    platform: str
    python: str

    @property
    def machine(self) -> str:
        """What ``platform.machine()`` says on such a host."""
        return next(a for a in _ARCHES if self.platform.endswith(a))

    def __str__(self) -> str:
        return f"cp{self.python} {self.platform}"


def parse_targets(platforms: tuple[str, ...] | list[str], pythons: tuple[str, ...] | list[str]) -> list[Target]:
    """Every (platform, python) pair, validated; aliases like ``aarch64`` expanded."""
    out = []
    for plat in platforms or DEFAULT_PLATFORMS:
        plat = PLATFORM_ALIASES.get(plat, plat)
        if not re.fullmatch(r"(manylinux\d*|manylinux_\d+_\d+|musllinux_\d+_\d+)_[a-z0-9_]+", plat) \
                or not any(plat.endswith(a) for a in _ARCHES):
            raise UsageError(f"--target-platform {plat!r} is not a Linux wheel platform tag",
                             hint="use manylinux2014_x86_64 (default) or manylinux2014_aarch64")
        for py in pythons or DEFAULT_PYTHONS:
            if not re.fullmatch(r"3\.\d{1,2}", py):
                raise UsageError(f"--python-version {py!r} is not like 3.11")
            out.append(Target(plat, py))
    return out


def default_wheel_cache() -> Path:
    return Path(user_cache("wheelhouse"))


def find_source_tree() -> Path | None:
    """The edgebundle source tree this code runs from, if it runs from one (not from a wheel)."""
    tree = Path(__file__).resolve().parents[1]
    ok = (tree / "pyproject.toml").is_file() and all((tree / p / "__init__.py").is_file() for p in PACKAGES)
    return tree if ok else None


def _pip(args: list[str], what: str, hint: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise WheelhouseError(f"{what} failed (pip exit {proc.returncode}):\n{tail}", hint=hint)


def build_own_wheel(source_tree: Path, out_dir: Path) -> Path:
    """Build the edgebundle wheel from a clean copy of the source tree (the tree is not touched)."""
    with tempfile.TemporaryDirectory(prefix="edgebundle-src-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in _SOURCE_FILES:
            if (source_tree / name).is_file():
                shutil.copy2(source_tree / name, src / name)
        for pkg in PACKAGES:
            shutil.copytree(source_tree / pkg, src / pkg,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        # With setuptools and wheel at hand, build with them: no build environment from an index.
        local = all(importlib.util.find_spec(m) is not None for m in ("setuptools", "wheel"))
        isolation = ["--no-build-isolation"] if local else []
        _pip(["wheel", "--no-deps", "--quiet", *isolation, "-w", str(out_dir), str(src)],
             f"building the edgebundle wheel from {source_tree}",
             "the build host needs setuptools (from the package index); or pass --edgebundle-wheel WHEEL")
    wheels = sorted(out_dir.glob("edgebundle-*.whl"))
    if len(wheels) != 1:
        raise WheelhouseError(f"pip built {len(wheels)} edgebundle wheels in {out_dir}, expected one")
    return wheels[0]


#: Optional extras the offline installer may carry, and the newer platform tag their wheels need
#: besides a ``manylinux2014`` target (helm-python-sdk ships manylinux_2_28 wheels only: glibc 2.28+).
EXTRA_PLATFORMS = {"helm": "manylinux_2_28"}


def _download(own: Path, t: Target, dest: Path, *, index: bool, find_links: Path,
              extras: tuple[str, ...] = ()) -> list[str]:
    args = ["download", "--quiet", "--dest", str(dest), "--only-binary=:all:", "--platform", t.platform,
            "--python-version", t.python, "--implementation", "cp", "--find-links", str(find_links)]
    for extra in extras:
        if extra in EXTRA_PLATFORMS and t.platform.startswith("manylinux2014_"):
            args += ["--platform", f"{EXTRA_PLATFORMS[extra]}_{t.machine}"]
    if not index:
        args.append("--no-index")
    return args + [f"{own}[{','.join(extras)}]" if extras else str(own)]


def build_wheelhouse(out: Path, targets: list[Target], *, cache: Path, own_wheel: Path | None = None,
                     source_tree: Path | None = None, log: Callable[[str], None] = lambda s: None,
                     extras: tuple[str, ...] = ()) -> Path:
    """Fill ``out`` with the edgebundle wheel and every dependency's wheel for each target, with
    the optional ``extras`` (``helm`` for a bundle with charts).

    Dependencies are resolved from ``cache`` without an index first; only when that fails does
    pip download into ``cache`` (the build host's index, its own pip configuration), so a rerun
    needs no network. Returns the edgebundle wheel in ``out``.
    """
    out.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    if own_wheel is None:
        tree = source_tree or find_source_tree()
        if tree is None:
            raise UsageError("edgebundle is not running from its source tree, so it cannot build its own wheel",
                             hint="pass --edgebundle-wheel WHEEL (the wheel this edgebundle came from)")
        log(f"building the edgebundle wheel from {tree}")
        own_wheel = build_own_wheel(tree, out)
    elif own_wheel.parent.resolve() != out.resolve():
        shutil.copy2(own_wheel, out / own_wheel.name)
    for t in targets:
        hint = (f"the build host could not get wheels for {t} from its package index; check pip's "
                "index configuration, or choose other --target-platform / --python-version values")
        proc = subprocess.run([sys.executable, "-m", "pip",
                               *_download(own_wheel, t, out, index=False, find_links=cache, extras=extras)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            log(f"downloading wheels for {t} into {cache}")
            _pip(_download(own_wheel, t, cache, index=True, find_links=cache, extras=extras),
                 f"pip download for {t}", hint)
            for stale in cache.glob("edgebundle-*.whl"):  # never resolve our own package from the cache
                stale.unlink()
            _pip(_download(own_wheel, t, out, index=False, find_links=cache, extras=extras),
                 f"collecting wheels for {t}", hint)
        log(f"wheels for {t}: ready")
    return out / own_wheel.name


def wheel_version(wheel: Path) -> str:
    return wheel.name.split("-")[1]
