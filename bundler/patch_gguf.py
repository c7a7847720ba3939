"""Tensor-wise patches of GGUF files, as ``EBPATCH1`` containers (bundler/patch.py).

A GGUF file is a header (metadata key-values, the tensor table) followed by aligned tensor
data. A metadata change (one longer string) shifts every tensor's absolute offset, so a
byte-wise diff of the whole file sees everything moved; a fine-tune changes some tensors and
leaves the rest. So: patch the header against the old header, then walk the new tensors in
file order and match each to the old tensor *of the same name*: equal bytes become one ``copy``
of the old range (adjacent copies merge), different bytes are encoded against the old tensor
(bundler.patch.encode_piece), tensors the old file lacks are carried (zstd when it pays).
Alignment padding between tensors travels as literal data.

Invariants:
- Only the two headers are parsed (bounded, bundler/gguf.py); tensor data is read one piece
  (at most :data:`edgebundle.patch.PIECE` bytes per side) at a time, so memory is bounded by the
  piece size whatever the model size.
- The output reproduces the new file byte for byte (callers hash it against the signed digest).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

from bundler.gguf import GGUFError, read_gguf_header, tensor_ranges
from bundler.patch import ContainerWriter, write_region
from edgebundle.patch import MARGIN


@dataclass(frozen=True)
class GGUFPlanStats:
    """What the tensor walk found (reported per blob by ``bundle inspect``)."""

    tensors: int
    same: int  # copied from the old file unchanged
    changed: int  # encoded against the old tensor of the same name
    added: int  # no old tensor of that name
    header_old: int
    header_new: int

    def summary(self) -> str:
        return (f"{self.tensors} tensors: {self.same} unchanged, {self.changed} changed, "
                f"{self.added} new; header {self.header_old} -> {self.header_new} B")


def is_gguf(f: BinaryIO) -> bool:
    f.seek(0)
    magic = f.read(4)
    f.seek(0)
    return magic == b"GGUF"


def write_gguf_patch(w: ContainerWriter, old: BinaryIO, old_size: int, new: BinaryIO,
                     new_size: int) -> GGUFPlanStats:
    """Add the operations that build ``new`` from ``old`` to ``w``; raise GGUFError if either is not GGUF."""
    old.seek(0)
    oh = read_gguf_header(old)
    new.seek(0)
    nh = read_gguf_header(new)
    old_ranges = {name: (s, e) for name, s, e in tensor_ranges(oh, old_size)}
    new_ranges = tensor_ranges(nh, new_size)
    if new_ranges and new_ranges[0][1] < nh.data_offset:
        raise GGUFError("tensor data starts inside the header")
    write_region(w, new, 0, nh.data_offset, old, 0, oh.data_offset, margin=MARGIN)
    pos = nh.data_offset
    same = changed = added = 0
    for name, start, end in new_ranges:
        if start > pos:  # alignment padding
            write_region(w, new, pos, start - pos, None, 0, 0)
        o = old_ranges.get(name)
        before = w.stats["copy"]
        if o is None:
            write_region(w, new, start, end - start, None, 0, 0)
            added += 1
        else:
            write_region(w, new, start, end - start, old, o[0], o[1] - o[0])
            if w.stats["copy"] - before == end - start:
                same += 1
            else:
                changed += 1
        pos = end
    if pos < new_size:  # anything after the last tensor
        write_region(w, new, pos, new_size - pos, None, 0, 0)
    return GGUFPlanStats(len(new_ranges), same, changed, added, oh.data_offset, nh.data_offset)
