"""Deterministic benchmark inputs: a GGUF-like LLM, an fp32 safetensors embedding model, manifests.

The data is meant to behave like the real thing under compression and diffing, not to be a
usable model: the GGUF is Q4_1 (blocks of two fp16 scales plus 16 bytes of 4-bit weights whose
values follow a bell curve, which zstd -3 shrinks to ~94%, like a real Q4_1 file), the
safetensors tensors are fp32 normals with the four lowest mantissa bits cleared (zstd -3: ~87%,
so the builder compresses them, as it does the real all-MiniLM weights).

Invariants:
- Same arguments, same bytes: every tensor is drawn from its own numpy PCG64 stream seeded by
  (seed, tensor index, variant), so a variant that changes some tensors leaves every other
  tensor's bytes identical (which the delta rows rely on).
- Files are streamed to disk about 1 MiB at a time; no file is ever held in memory.
- The GGUF header is written by the ``gguf`` package's own writer (so it is a valid GGUF v3
  file), only the tensor data is streamed by us.
"""

from __future__ import annotations

import json
import math
import random
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

GIB = 1 << 30
MIB = 1 << 20

# -- GGUF (Q4_1) ---------------------------------------------------------------------------

#: Q4_1: 32 weights per block, stored as fp16 scale d, fp16 minimum m, 16 bytes of nibbles.
Q4_1_BLOCK_WEIGHTS = 32
Q4_1_BLOCK_BYTES = 20
#: Columns (ne0) of every weight matrix; one row is 4096 / 32 * 20 = 2560 bytes.
GGUF_COLS = 4096
GGUF_ROW_BYTES = GGUF_COLS // Q4_1_BLOCK_WEIGHTS * Q4_1_BLOCK_BYTES
#: Target size of one weight tensor (real 7B Q4 tensors are 10-100 MiB).
GGUF_TENSOR_TARGET = 20 * MIB
#: At least this many weight tensors, so "5% of the tensors changed" is a real subset.
GGUF_MIN_TENSORS = 20
#: Blocks generated per step: about 1 MiB of output.
_BLOCKS_PER_STEP = MIB // Q4_1_BLOCK_BYTES
#: Standard deviation (in quantization steps) of the 4-bit weights around the middle value 7.5.
_NIBBLE_SD = 3.2


@dataclass(frozen=True)
class GGUFVariant:
    """What distinguishes one version of the benchmark LLM from another.

    ``changed`` tensors (by index) are drawn from stream ``variant`` instead of stream 0;
    ``metadata`` overrides header key-values (a metadata edit moves the tensor data by the
    header's change in length, as ``gguf-new-metadata`` does).
    """

    variant: int = 0
    changed: frozenset[int] = frozenset()
    metadata: Mapping[str, str] = field(default_factory=dict)


def _byte_table() -> np.ndarray:
    """65536 entries mapping a uniform 16-bit value to a byte of two bell-curved nibbles."""
    def cdf(x: float) -> float:
        return 0.5 * (1 + math.erf((x - 7.5) / (_NIBBLE_SD * math.sqrt(2))))

    p = np.array([cdf(k + 0.5) - cdf(k - 0.5) for k in range(16)])
    p[0] += cdf(-0.5)
    p[15] += 1 - cdf(15.5)
    counts = np.floor(np.outer(p / p.sum(), p / p.sum()).ravel() * 65536).astype(np.int64)
    counts[int(np.argmax(counts))] += 65536 - int(counts.sum())
    return np.repeat(np.arange(256, dtype=np.uint8), counts)


_TABLE = _byte_table()


#: Stream purposes, so weights, norms and embedding tensors never share a stream.
_WEIGHTS, _NORMS, _EMBED = 0, 1, 2


def _rng(seed: int, purpose: int, index: int, variant: int = 0) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, purpose, index, variant])))


def q4_1_blocks(rng: np.random.Generator, nblocks: int) -> bytes:
    """``nblocks`` Q4_1 blocks that compress like real quantized weights."""
    out = np.empty((nblocks, Q4_1_BLOCK_BYTES), dtype=np.uint8)
    d = (rng.standard_normal(nblocks, dtype=np.float32) * 0.002 + 0.01).astype(np.float16)
    m = (rng.random(nblocks, dtype=np.float32) * -0.05).astype(np.float16)
    out[:, 0:2] = d.view(np.uint8).reshape(nblocks, 2)
    out[:, 2:4] = m.view(np.uint8).reshape(nblocks, 2)
    uniform = np.frombuffer(rng.bytes(nblocks * 32), dtype=np.uint16)
    out[:, 4:] = _TABLE[uniform].reshape(nblocks, 16)
    return out.tobytes()


@dataclass(frozen=True)
class GGUFPlan:
    """Shape of the benchmark LLM for a target size: ``tensors`` weight matrices of ``rows``."""

    tensors: int
    rows: int

    @classmethod
    def for_size(cls, nbytes: int) -> "GGUFPlan":
        tensors = max(GGUF_MIN_TENSORS, round(nbytes / GGUF_TENSOR_TARGET))
        rows = max(1, round(nbytes / tensors / GGUF_ROW_BYTES))
        return cls(tensors, rows)

    @property
    def tensor_bytes(self) -> int:
        return self.rows * GGUF_ROW_BYTES


def write_gguf(path: Path, nbytes: int, *, seed: int = 1, version: GGUFVariant = GGUFVariant()) -> GGUFPlan:
    """Write a Q4_1 GGUF v3 file of about ``nbytes`` at ``path``; the plan it followed."""
    import gguf  # the writer is a test/bench dependency only

    plan = GGUFPlan.for_size(nbytes)
    writer = gguf.GGUFWriter(path, arch="llama")
    meta = {"general.name": "bench-llm", "general.basename": "bench-llm", **version.metadata}
    for key, value in sorted(meta.items()):
        writer.add_string(key, value)
    writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_Q4_1))
    writer.add_context_length(4096)
    writer.add_embedding_length(GGUF_COLS)
    writer.add_block_count(plan.tensors)
    for i in range(plan.tensors):
        writer.add_tensor_info(f"blk.{i}.ffn_norm.weight", (GGUF_COLS,), np.dtype(np.float32), GGUF_COLS * 4)
        writer.add_tensor_info(f"blk.{i}.ffn_down.weight", (plan.rows, GGUF_COLS), np.dtype(np.float32),
                               plan.tensor_bytes, raw_dtype=gguf.GGMLQuantizationType.Q4_1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    assert writer.fout is not None
    out: BinaryIO = writer.fout[0]
    try:
        _pad(out, writer.data_alignment)
        for i in range(plan.tensors):
            norm = _rng(seed, _NORMS, i).standard_normal(GGUF_COLS, dtype=np.float32) * 0.1 + 1.0
            out.write(norm.astype(np.float32).tobytes())
            _pad(out, writer.data_alignment)
            stream = _rng(seed, _WEIGHTS, i, version.variant if i in version.changed else 0)
            left = plan.tensor_bytes // Q4_1_BLOCK_BYTES
            while left:
                step = min(left, _BLOCKS_PER_STEP)
                out.write(q4_1_blocks(stream, step))
                left -= step
            _pad(out, writer.data_alignment)
    finally:
        writer.close()
    return plan


def _pad(out: BinaryIO, alignment: int) -> None:
    out.write(b"\0" * (-out.tell() % alignment))


def changed_tensors(plan: GGUFPlan, fraction: float) -> frozenset[int]:
    """Every k-th weight tensor, so that ``fraction`` of them (at least one) differ."""
    count = max(1, round(plan.tensors * fraction))
    step = plan.tensors / count
    return frozenset(int(i * step + step / 2) for i in range(count))


# -- safetensors embedding model -----------------------------------------------------------

EMBED_COLS = 1536
EMBED_TENSOR_TARGET = 9 * MIB
_MANTISSA_MASK = np.uint32(0xFFFFFFF0)


def write_embedding_dir(root: Path, nbytes: int, *, seed: int = 2) -> None:
    """A Hugging Face style embedding model directory of about ``nbytes`` (fp32 safetensors)."""
    root.mkdir(parents=True, exist_ok=True)
    layers = max(4, round(nbytes / EMBED_TENSOR_TARGET))
    rows = max(1, nbytes // (layers * EMBED_COLS * 4))
    tensor_bytes = rows * EMBED_COLS * 4
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    for i in range(layers):
        header[f"encoder.layer.{i}.dense.weight"] = {
            "dtype": "F32", "shape": [rows, EMBED_COLS],
            "data_offsets": [i * tensor_bytes, (i + 1) * tensor_bytes]}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    rows_per_step = max(1, MIB // (EMBED_COLS * 4))
    with open(root / "model.safetensors", "wb") as out:
        out.write(struct.pack("<Q", len(raw)) + raw)
        for i in range(layers):
            rng = _rng(seed, _EMBED, i)
            left = rows
            while left:
                step = min(left, rows_per_step)
                x = rng.standard_normal(step * EMBED_COLS, dtype=np.float32) * np.float32(0.05)
                out.write((x.view(np.uint32) & _MANTISSA_MASK).tobytes())
                left -= step
    config = {"model_type": "bert", "architectures": ["BertModel"], "hidden_size": EMBED_COLS,
              "num_hidden_layers": layers, "max_position_embeddings": 512, "torch_dtype": "float32"}
    (root / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    words = _vocab(seed)
    (root / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = {"version": "1.0", "model": {"type": "WordPiece", "unk_token": "[UNK]",
                                             "vocab": {w: i for i, w in enumerate(words)}}}
    (root / "tokenizer.json").write_text(json.dumps(tokenizer, indent=1) + "\n")


def _vocab(seed: int, size: int = 30522) -> list[str]:
    rnd = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words += [("##" if rnd.random() < 0.3 else "") + "".join(rnd.choices(letters, k=rnd.randint(2, 9)))
              for _ in range(size - len(words))]
    return words


# -- manifests and the whole input tree ----------------------------------------------------

#: The shipped manifests' model names -> the bench's, so the manifests load the models the bench
#: bundles carry (bundle create refuses manifests naming models a bundle does not stage).
MODEL_NAMES = {"smollm2-135m": "bench-llm", "all-minilm-l6-v2": "bench-embed"}


def copy_manifests(repo_manifests: Path, dest: Path, replace: dict[str, str] | None = None) -> list[Path]:
    """Kubernetes manifests (the YAML files only) copied to ``dest``, each ``replace`` key -> value in them
    (default: the shipped manifests with the bench's model names)."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for src in sorted(repo_manifests.glob("*.yaml")):
        text = src.read_text()
        for old, new in (MODEL_NAMES if replace is None else replace).items():
            text = text.replace(old, new)
        (dest / src.name).write_text(text)
        out.append(dest / src.name)
    return out


@dataclass(frozen=True)
class Inputs:
    """Where the generated inputs live (all below ``root``)."""

    root: Path

    @property
    def oci(self) -> Path:
        return self.root / "oci"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def llm(self) -> Path:
        return self.models / "bench-llm.gguf"

    @property
    def embedding(self) -> Path:
        return self.models / "bench-embed"

    @property
    def manifests(self) -> Path:
        return self.root / "manifests"

    def files(self) -> Iterator[Path]:
        """Every input file the baselines read, sorted."""
        for top in (self.oci, self.models, self.manifests):
            yield from sorted(p for p in top.rglob("*") if p.is_file())


def write_spec(path: Path, *, registry: str, image_refs: list[str], llm: Path, embedding: Path,
               manifests: Path, version: str = "1.0.0", llm_version: str = "v1",
               embedding_name: str = "bench-embed") -> None:
    """A bundle spec naming every image, both models and the manifests (absolute paths)."""
    import yaml

    doc = {
        "apiVersion": "edgebundle/v1", "kind": "Bundle",
        "metadata": {"name": "bench", "version": version, "compatible": "bench/x86_64"},
        "spec": {
            "images": [{"ref": f"{registry}/{ref}"} for ref in image_refs],
            "models": [
                {"name": "bench-llm", "kind": "llm", "version": llm_version, "path": str(llm)},
                {"name": embedding_name, "kind": "embedding", "version": "v1", "path": str(embedding) + "/"},
            ],
            "manifests": [str(manifests) + "/"],
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def write_site(path: Path, *, pubkey: Path, registry: str, models_root: Path, state_dir: Path) -> None:
    """A site file for the installer rows (registry, NAS and state dir are overridden per run)."""
    import yaml

    doc = {
        "apiVersion": "edgebundle/v1", "kind": "Site", "metadata": {"name": "bench-site"},
        "spec": {"compatible": "bench/x86_64", "trust": {"keys": [str(pubkey)]},
                 "registry": {"address": registry, "plainHTTP": True},
                 "models": {"root": str(models_root)}, "stateDir": str(state_dir)},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
