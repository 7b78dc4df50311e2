"""Checkpoint files are untrusted input (pix2pix_zero.loading.checkpoint): every malformed header ends in
CheckpointError naming the file, before any tensor is allocated; a fuzz run over random corruptions of a small
real file never crashes, hangs or allocates more than the file holds."""
import json
import random
import struct

import pytest
import torch
from safetensors.torch import save_file

from pix2pix_zero.loading.checkpoint import CheckpointError, SafetensorsFile


def write(path, header: dict | bytes, data: bytes = b"", length: int | None = None):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


def entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


@pytest.mark.parametrize("header, data, length, message", [
    ({"a": entry()}, bytes(8), 10**6, "header length"),  # header length beyond the file
    (b"{not json", b"", None, "corrupt safetensors header"),
    (b"[1, 2]", b"", None, "not an object"),
    ({"a": entry(dtype="F8_E9M9")}, bytes(8), None, "unknown dtype"),
    ({"a": entry(shape=(3,))}, bytes(8), None, "8 bytes for shape"),  # 3 floats are 12 bytes
    ({"a": entry(offsets=(0, 16))}, bytes(8), None, "truncated file"),  # ends beyond the file
    ({"a": entry(offsets=(8, 0))}, bytes(8), None, "begin <= end"),
    ({"a": entry(offsets=(-8, 0))}, bytes(8), None, "begin <= end"),
    ({"a": entry(), "b": entry(offsets=(4, 12))}, bytes(12), None, "overlap"),
    ({"a": entry(shape=(-2,))}, bytes(8), None, "non-negative"),
    ({"a": entry(shape=(10**30, 10**30), offsets=(0, 8))}, bytes(8), None, "bytes for shape"),  # absurd, no overflow
    ({"a": entry(shape=(2.0,))}, bytes(8), None, "non-negative integers"),
    ({"a": entry(shape=(True, 2))}, bytes(8), None, "non-negative integers"),
    ({"a": {"dtype": "F32"}}, bytes(8), None, "dtype, shape and data_offsets"),
    ({"a": entry(offsets=(0,))}, bytes(8), None, "two integers"),
])
def test_each_malformed_header_is_refused_with_its_reason(tmp_path, header, data, length, message):
    path = write(tmp_path / "bad.safetensors", header, data, length)
    with pytest.raises(CheckpointError, match=message) as e:
        SafetensorsFile(path)
    assert "bad.safetensors" in str(e.value)


def test_a_well_formed_file_reads_back(tmp_path):
    path = write(tmp_path / "ok.safetensors", {"a": entry(), "b": entry("F16", (1, 2), (8, 12))},
                 struct.pack("<2f", 1.5, -2.0) + torch.tensor([[3.0, 4.0]], dtype=torch.float16).numpy().tobytes())
    f = SafetensorsFile(path)
    torch.testing.assert_close(f.read("a"), torch.tensor([1.5, -2.0]))
    torch.testing.assert_close(f.read("b", dtype=torch.float32), torch.tensor([[3.0, 4.0]]))


def test_fuzzed_headers_end_in_checkpoint_error_or_read_correctly(tmp_path):
    """500 seeded corruptions of a real file (bytes of the length prefix or header flipped, replaced, dropped or
    inserted; the file cut short): each opens and reads every tensor to its exact size, or raises CheckpointError."""
    src = tmp_path / "src.safetensors"
    tensors = {"w": torch.arange(12, dtype=torch.float32).reshape(3, 4), "b": torch.ones(5, dtype=torch.float16),
               "i": torch.arange(3, dtype=torch.int64)}
    save_file(tensors, src, metadata={"note": "fuzz"})
    original = src.read_bytes()
    (n,) = struct.unpack("<Q", original[:8])
    rng = random.Random(0)
    outcomes = {"refused": 0, "read": 0}
    for case in range(500):
        data = bytearray(original)
        kind = rng.choice(["flip", "replace", "drop", "insert", "cut", "length"])
        at = rng.randrange(0, 8 + n)
        if kind == "flip":
            data[at] ^= 1 << rng.randrange(8)
        elif kind == "replace":
            data[at] = rng.choice(b'{}[]":,0123456789-eE.ntfaxyz \\')
        elif kind == "drop":
            del data[at]
        elif kind == "insert":
            data.insert(at, rng.randrange(256))
        elif kind == "cut":
            data = data[:rng.randrange(0, len(data))]
        else:
            data[:8] = struct.pack("<Q", rng.choice([0, 1, n - 1, n + 1, len(data), 2**63, 2**64 - 1]))
        path = tmp_path / f"case{case}.safetensors"
        path.write_bytes(bytes(data))
        try:
            f = SafetensorsFile(path)
            for key in f.keys():
                t = f.read(key)
                dtype, shape, begin, end = f.entries[key]
                assert t.shape == shape and t.numel() * t.element_size() == end - begin <= len(data)
        except CheckpointError as e:
            assert path.name in str(e)
            outcomes["refused"] += 1
        else:
            outcomes["read"] += 1
        path.unlink()
    assert outcomes["refused"] > 250 and outcomes["read"] > 0  # both kinds occur; no other exception escaped
