"""Describe a model as a CNCF ModelPack artifact: its files, their roles, and its config JSON.

A bundle ships each model version as a ModelPack artifact (model-spec v1): one layer per file,
annotated with ``org.cncf.model.filepath``, plus a config blob
(``application/vnd.cncf.model.config.v1+json``) whose ``descriptor``/``config``/``modelfs``
fields follow ``specs-go/v1/config.go``. This module decides what goes in them; the builder
hashes and stores the bytes.

Invariants:

- Only headers are read: the GGUF header (via :mod:`bundler.gguf`), the safetensors JSON header
  (8-byte length prefix, bounded by :data:`edgebundle.layout.MAX_JSON_BYTES`) and small JSON
  configs. Weights are never read.
- The file list is exactly :func:`bundler.spec.model_files` (sorted, hidden files skipped), so
  the lockfile, the builder and this description always agree on which files a model has.
- :func:`model_config_bytes` is canonical JSON (sorted keys, no spaces) and carries only fields
  the ModelPack schema allows (it sets ``additionalProperties: false``). Facts the schema has no
  field for (context length, embedding length) stay on :class:`ModelDescription` for the
  bundle's own root document.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from datetime import datetime
from math import prod
from pathlib import Path
from typing import Any

from bundler.gguf import GGUFError, GGUFHeader, read_gguf_header, summarize
from bundler.spec import ModelSpec, model_files
from edgebundle import mediatypes as mt
from edgebundle.digest import is_digest
from edgebundle.errors import EdgebundleError
from edgebundle.layout import MAX_JSON_BYTES
from edgebundle.root import canonical_json

ANNOTATION_FILEPATH = "org.cncf.model.filepath"
MAX_CONFIG_JSON_BYTES = 1024 * 1024
"""Bound for ``config.json``-style files read whole."""

ROLES = ("weight", "config", "doc")
_ROLE_MEDIA_TYPES = {
    "weight": mt.MODEL_WEIGHT_RAW,
    "config": mt.MODEL_WEIGHT_CONFIG_RAW,
    "doc": mt.MODEL_DOC_RAW,
}
_WEIGHT_SUFFIXES = {
    ".gguf": "gguf", ".safetensors": "safetensors", ".onnx": "onnx", ".bin": "pytorch",
    ".pt": "pytorch", ".pth": "pytorch", ".ckpt": "pytorch", ".h5": "tensorflow",
    ".pb": "tensorflow", ".tflite": "tflite", ".msgpack": "flax",
}
# Order of preference when a directory holds several weight formats (HF repos often do).
_FORMAT_PREFERENCE = ("gguf", "safetensors", "onnx", "pytorch", "tensorflow", "tflite", "flax")
_DOC_STEMS = ("README", "LICENSE", "LICENCE", "NOTICE", "COPYING", "CHANGELOG", "MODEL_CARD")
_DOC_SUFFIXES = {".md", ".rst", ".pdf", ".html"}
# GGUF architectures that are not transformers; everything else llama.cpp loads is one.
_NON_TRANSFORMER_ARCHS = {"mamba", "mamba2", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7"}

_SAFETENSORS_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
    "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
}
_FLOAT_PRECISION = {
    "F64": "fp64", "F32": "fp32", "F16": "fp16", "BF16": "bf16", "F8_E4M3": "fp8", "F8_E5M2": "fp8",
}
_TORCH_DTYPE_PRECISION = {
    "float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64", "int8": "int8",
}
_GGUF_FLOAT_FILE_TYPES = {"F32": "fp32", "F16": "fp16", "BF16": "bf16"}


class ModelError(EdgebundleError):
    """A model file or directory cannot be described (unreadable or malformed header)."""


@dataclass(frozen=True)
class ModelFile:
    """One file of a model version and the ModelPack role of its layer."""

    relpath: str  # POSIX path relative to the model version directory
    abs_path: Path
    size: int
    role: str  # weight | config | doc

    @property
    def media_type(self) -> str:
        """Layer media type when the file travels unarchived (``.raw``)."""
        return _ROLE_MEDIA_TYPES[self.role]

    @property
    def annotations(self) -> dict[str, str]:
        return {ANNOTATION_FILEPATH: self.relpath}


@dataclass(frozen=True)
class ModelDescription:
    """What a bundle says about one model version, read from headers only."""

    name: str
    kind: str  # llm | embedding | index
    version: str
    path: Path
    files: list[ModelFile]
    format: str  # gguf | safetensors | onnx | pytorch | ... | raw
    architecture: str | None = None  # gguf general.architecture / HF model_type, e.g. llama, bert
    family: str | None = None  # e.g. smollm2 (gguf general.basename), bert
    quantization: str | None = None  # Q4_1, Q8_0, ... or awq/gptq for HF checkpoints
    precision: str | None = None  # fp32, fp16, bf16, int8 or mixed
    param_count: int | None = None
    size_label: str | None = None  # as the publisher states it, e.g. 135M
    context_length: int | None = None
    embedding_length: int | None = None
    block_count: int | None = None
    licenses: list[str] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def param_size(self) -> str | None:
        """ModelPack ``paramSize``: ``<count><scale>`` with at most one decimal, e.g. ``134.5M``."""
        return format_param_size(self.param_count) if self.param_count else None


def format_param_size(count: int) -> str:
    """Render a parameter count the way ModelPack's ``paramSize`` wants it."""
    scales = (("Q", 10**15), ("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3))
    for i, (suffix, unit) in enumerate(scales):
        if count >= unit or suffix == "K":
            text = f"{count / unit:.1f}".removesuffix(".0")
            if float(text) >= 1000 and i > 0:  # 999.96M rounds to 1000M: say 1B
                suffix, unit = scales[i - 1]
                text = f"{count / unit:.1f}".removesuffix(".0")
            return f"{text}{suffix}"
    raise AssertionError("unreachable")


def file_role(relpath: str, kind: str) -> str:
    """ModelPack role of a file: weights, weight config (tokenizer, config.json...) or docs.

    For an ``index`` model the payload files (the index itself) travel as weights: they are
    what the consumer loads.
    """
    name = relpath.rsplit("/", 1)[-1]
    suffix = ("." + name.rsplit(".", 1)[-1].lower()) if "." in name else ""
    if suffix in _WEIGHT_SUFFIXES:
        return "weight"
    if suffix in _DOC_SUFFIXES or name.upper().startswith(_DOC_STEMS):
        return "doc"
    if kind == "index" and suffix not in {".json", ".yaml", ".yml", ".txt"}:
        return "weight"
    return "config"


def describe_model(name: str, kind: str, version: str, path: Path) -> ModelDescription:
    """Describe the model at ``path`` (one file, or a directory meaning every file in it)."""
    path = Path(path)
    listed = model_files(ModelSpec(name, kind, version, path))
    files = [ModelFile(rel, p, p.stat().st_size, file_role(rel, kind)) for rel, p in listed]
    formats = {_WEIGHT_SUFFIXES[s] for f in files if (s := f.abs_path.suffix.lower()) in _WEIGHT_SUFFIXES}
    fmt = next((f for f in _FORMAT_PREFERENCE if f in formats), "raw")
    facts: dict[str, Any] = {}
    if fmt == "gguf":
        facts = _gguf_facts(name, [f for f in files if f.abs_path.suffix.lower() == ".gguf"])
    elif fmt == "safetensors" or (path.is_dir() and (path / "config.json").is_file()):
        # A lone file is described by itself: a config.json beside it is not part of the model.
        facts = _hf_facts(name, path if path.is_dir() else None, files, fmt)
    return ModelDescription(name=name, kind=kind, version=version, path=path, files=files,
                            format=fmt, **facts)


def _gguf_facts(name: str, ggufs: list[ModelFile]) -> dict[str, Any]:
    """Facts from the first GGUF (split models: parameters summed over every shard)."""
    headers: list[GGUFHeader] = []
    for f in ggufs:
        try:
            with open(f.abs_path, "rb") as fh:
                headers.append(read_gguf_header(fh, keep_arrays_up_to=16))
        except GGUFError as e:
            raise ModelError(f"model {name}: {f.relpath}: {e.message}", e.hint) from e
    s = summarize(headers[0])
    arch = s["architecture"]
    quant = s["quantization"]
    basename = headers[0].metadata.get("general.basename")
    lic = headers[0].metadata.get("general.license")
    langs = headers[0].metadata.get("general.languages")
    return {
        "architecture": arch,
        "family": basename if isinstance(basename, str) and basename else arch,
        "quantization": quant,
        "precision": _GGUF_FLOAT_FILE_TYPES.get(quant or "", "mixed" if quant else None),
        "param_count": sum(h.parameter_count for h in headers),
        "size_label": s["size_label"],
        "context_length": s["context_length"],
        "embedding_length": s["embedding_length"],
        "block_count": s["block_count"],
        "licenses": [lic] if isinstance(lic, str) and lic else [],
        "languages": [x for x in langs if isinstance(x, str)] if isinstance(langs, list) else [],
    }


def _read_small_json(path: Path, limit: int, what: str) -> Any:
    with open(path, "rb") as f:
        raw = f.read(limit + 1)
    if len(raw) > limit:
        raise ModelError(f"{what} {path} is larger than {limit} bytes")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{what} {path} is not valid JSON: {e}") from e


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, checked against the file's size.

    Layout: 8-byte little-endian header length N, N bytes of JSON, then the tensor data that
    the ``data_offsets`` index into.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ModelError(f"{path} is too short to be a safetensors file")
        (n,) = struct.unpack("<Q", prefix)
        if n > MAX_JSON_BYTES or 8 + n > size:
            raise ModelError(f"{path}: safetensors header claims {n} bytes (file {size}, limit {MAX_JSON_BYTES})")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path}: safetensors header is not valid JSON: {e}") from e
    if not isinstance(header, dict):
        raise ModelError(f"{path}: safetensors header is not a JSON object")
    data_size = size - 8 - n
    for tname, t in header.items():
        if tname == "__metadata__":
            continue
        ok = (isinstance(t, dict) and isinstance(t.get("dtype"), str)
              and isinstance(t.get("shape"), list) and len(t["shape"]) <= 16
              and all(isinstance(d, int) and d >= 0 for d in t["shape"])
              and isinstance(t.get("data_offsets"), list) and len(t["data_offsets"]) == 2
              and all(isinstance(o, int) for o in t["data_offsets"])
              and 0 <= t["data_offsets"][0] <= t["data_offsets"][1] <= data_size)
        if not ok:
            raise ModelError(f"{path}: safetensors entry {tname!r} is malformed or out of bounds")
        width = _SAFETENSORS_DTYPE_BYTES.get(t["dtype"])
        begin, end = t["data_offsets"]
        if width is not None and prod(t["shape"]) * width != end - begin:
            raise ModelError(f"{path}: tensor {tname!r} has {end - begin} bytes, its shape needs "
                             f"{prod(t['shape']) * width}")
    return header


def _hf_facts(name: str, root: Path | None, files: list[ModelFile], fmt: str) -> dict[str, Any]:
    """Facts from ``config.json`` and the safetensors headers of a Hugging Face style model."""
    facts: dict[str, Any] = {}
    cfg_path = root / "config.json" if root else None
    cfg = (_read_small_json(cfg_path, MAX_CONFIG_JSON_BYTES, "model config")
           if cfg_path and cfg_path.is_file() else {})
    if not isinstance(cfg, dict):
        raise ModelError(f"model {name}: {cfg_path} is not a JSON object")

    def cfg_int(*keys: str) -> int | None:
        for k in keys:
            v = cfg.get(k)
            if isinstance(v, int) and not isinstance(v, bool):
                return v
        return None

    model_type = cfg.get("model_type") if isinstance(cfg.get("model_type"), str) else None
    facts["architecture"] = model_type
    facts["family"] = model_type
    facts["context_length"] = cfg_int("max_position_embeddings", "n_positions", "max_sequence_length")
    facts["embedding_length"] = cfg_int("hidden_size", "d_model", "n_embd")
    facts["block_count"] = cfg_int("num_hidden_layers", "n_layer", "num_layers")
    qcfg = cfg.get("quantization_config")
    if isinstance(qcfg, dict) and isinstance(qcfg.get("quant_method"), str):
        facts["quantization"] = qcfg["quant_method"]
    torch_dtype = cfg.get("torch_dtype") or cfg.get("dtype")
    precision = _TORCH_DTYPE_PRECISION.get(torch_dtype) if isinstance(torch_dtype, str) else None

    if fmt == "safetensors":
        float_params, all_params, dtypes = 0, 0, set()
        for f in files:
            if f.abs_path.suffix.lower() != ".safetensors":
                continue
            for tname, t in read_safetensors_header(f.abs_path).items():
                if tname == "__metadata__":
                    continue
                n = prod(t["shape"])
                all_params += n
                if t["dtype"] in _FLOAT_PRECISION:
                    float_params += n
                    dtypes.add(_FLOAT_PRECISION[t["dtype"]])
        # Integer tensors in a float checkpoint are buffers (e.g. position_ids), not parameters.
        facts["param_count"] = float_params or all_params or None
        if dtypes:
            precision = dtypes.pop() if len(dtypes) == 1 else "mixed"
    facts["precision"] = precision
    return facts


def _check_created(created: str) -> None:
    try:
        datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        raise ModelError(f"createdAt {created!r} is not an RFC 3339 timestamp") from None
    if "T" not in created:
        raise ModelError(f"createdAt {created!r} is not an RFC 3339 timestamp")


def model_config(desc: ModelDescription, diff_ids: list[str], created: str) -> dict[str, Any]:
    """The ModelPack config document as a dict; ``diff_ids`` are in ``desc.files`` order."""
    if len(diff_ids) != len(desc.files):
        raise ModelError(f"model {desc.name}: {len(diff_ids)} diffIds for {len(desc.files)} files")
    bad = [d for d in diff_ids if not is_digest(d)]
    if bad:
        raise ModelError(f"model {desc.name}: diffIds must be sha256 digests, got {bad[0]!r}")
    _check_created(created)
    descriptor: dict[str, Any] = {"name": desc.name, "version": desc.version, "createdAt": created}
    if desc.family:
        descriptor["family"] = desc.family
    if desc.licenses:
        descriptor["licenses"] = list(desc.licenses)
    config: dict[str, Any] = {"format": desc.format}
    if desc.architecture:
        config["architecture"] = (desc.architecture if desc.architecture in _NON_TRANSFORMER_ARCHS
                                  else "transformer")
    for key, value in (("paramSize", desc.param_size), ("precision", desc.precision),
                       ("quantization", desc.quantization)):
        if value:
            config[key] = value
    capabilities: dict[str, Any] = {}
    if desc.kind == "llm":
        capabilities = {"inputTypes": ["text"], "outputTypes": ["text"]}
    elif desc.kind == "embedding":
        capabilities = {"inputTypes": ["text"], "outputTypes": ["embedding"]}
    languages = [x for x in desc.languages if len(x) == 2 and x.isascii() and x.islower()]
    if languages and capabilities:
        capabilities["languages"] = languages
    if capabilities:
        config["capabilities"] = capabilities
    return {
        "descriptor": descriptor,
        "config": config,
        "modelfs": {"type": "layers", "diffIds": list(diff_ids)},
    }


def model_config_bytes(desc: ModelDescription, diff_ids: list[str], created: str) -> bytes:
    """Canonical bytes of the ModelPack config blob (``application/vnd.cncf.model.config.v1+json``)."""
    return canonical_json(model_config(desc, diff_ids, created))
