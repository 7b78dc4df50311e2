"""Reading safetensors checkpoints tensor by tensor, and loading modules strictly with a readable report.

A safetensors file is an 8-byte little-endian header length, a JSON header {name: {dtype, shape,
data_offsets}} and the raw tensor bytes (https://github.com/huggingface/safetensors#format). Reading each
tensor with plain file reads (no mmap) and casting it at once keeps peak memory near one copy of the
weights at the target dtype. Pickled checkpoints (.ckpt, .pt, .bin) are refused, never unpickled.
"""
import hashlib
import json
import math
import os
import struct
from collections import Counter
from pathlib import Path

import torch
from torch import nn

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}

PICKLE_HELP = (
    "pix2pix_zero reads safetensors only and never unpickles files. Convert it once (from a source you trust) with:\n"
    "  python -c \"import sys, torch, safetensors.torch as st; "
    "sd = torch.load(sys.argv[1], map_location='cpu', weights_only=True); "
    "sd = sd.get('state_dict', sd); "
    "st.save_file({k: v.contiguous() for k, v in sd.items() if torch.is_tensor(v)}, sys.argv[2])\" "
    "model.ckpt model.safetensors\n"
    "or download the .safetensors version of the model.")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file and what is wrong."""


class SafetensorsFile:
    """Header of one safetensors file, and reads of single tensors from it."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: no such file")
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            head = f.read(8)
            if head[:2] == b"PK" or head[:1] == b"\x80":
                raise CheckpointError(f"{self.path}: this is a PyTorch pickle checkpoint, not safetensors.\n"
                                      f"{PICKLE_HELP}")
            if len(head) < 8:
                raise CheckpointError(f"{self.path}: not a safetensors file ({size} bytes, too short for a header)")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8 or n > 100_000_000:
                raise CheckpointError(f"{self.path}: not a safetensors file, or truncated (header length {n} > "
                                      f"file size {size})")
            self.header_bytes = f.read(n)
        try:
            header = json.loads(self.header_bytes)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise CheckpointError(f"{self.path}: corrupt safetensors header ({e})") from None
        if not isinstance(header, dict):
            raise CheckpointError(f"{self.path}: corrupt safetensors header "
                                  f"(a JSON {type(header).__name__}, not an object)")
        self.metadata = header.pop("__metadata__", None) or {}
        self.data_start = 8 + n
        self.entries: dict[str, tuple[torch.dtype, tuple[int, ...], int, int]] = {}
        for key, e in header.items():
            self.entries[key] = self.check_entry(key, e, size - self.data_start)
        spans = sorted((begin, end, key) for key, (_, _, begin, end) in self.entries.items() if end > begin)
        for (_, end, a), (begin, _, b) in zip(spans, spans[1:]):
            if begin < end:
                raise CheckpointError(f"{self.path}: corrupt header: the bytes of {a!r} and {b!r} overlap")

    def check_entry(self, key: str, e, data_size: int) -> tuple[torch.dtype, tuple[int, ...], int, int]:
        """(dtype, shape, begin, end) of one header entry, every field checked against the file before any
        tensor is allocated: a known dtype, non-negative integer dimensions, 0 <= begin <= end <= data size,
        and exactly dtype size x prod(shape) bytes."""
        def bad(problem: str) -> CheckpointError:
            return CheckpointError(f"{self.path}: corrupt header entry for {key!r}: {problem} ({str(e)[:200]})")

        if not isinstance(e, dict) or not {"dtype", "shape", "data_offsets"} <= set(e):
            raise bad("not an object with dtype, shape and data_offsets")
        if e["dtype"] not in DTYPES:
            raise bad(f"unknown dtype {e['dtype']!r} (known: {', '.join(DTYPES)})")
        shape, offsets = e["shape"], e["data_offsets"]
        is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
        if not isinstance(shape, list) or not all(is_int(d) and d >= 0 for d in shape):
            raise bad("shape must be a list of non-negative integers")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(is_int(o) for o in offsets):
            raise bad("data_offsets must be two integers")
        begin, end = offsets
        if not 0 <= begin <= end:
            raise bad(f"data_offsets [{begin}, {end}] are not 0 <= begin <= end")
        if end > data_size:
            raise CheckpointError(f"{self.path}: truncated file: tensor {key!r} ends at byte {self.data_start + end} "
                                  f"but the file has {self.data_start + data_size} bytes (re-download it)")
        dtype = DTYPES[e["dtype"]]
        nbytes = dtype.itemsize * math.prod(shape)  # Python integers: an absurd shape cannot overflow
        if end - begin != nbytes:
            raise bad(f"{end - begin} bytes for shape {tuple(shape)} of {e['dtype']} ({nbytes} bytes)")
        return dtype, tuple(shape), begin, end

    def keys(self) -> list[str]:
        return list(self.entries)

    def shape(self, key: str) -> tuple[int, ...]:
        return self.entries[key][1]

    def read(self, key: str, device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> torch.Tensor:
        """One tensor, cast to `dtype` (floating tensors only) and moved to `device`."""
        src_dtype, shape, begin, end = self.entries[key]
        buf = torch.empty(end - begin, dtype=torch.uint8)  # uninitialised: the read fills every byte
        with open(self.path, "rb") as f:
            f.seek(self.data_start + begin)
            if f.readinto(buf.numpy()) != end - begin:
                raise CheckpointError(f"{self.path}: truncated while reading {key!r}")
        t = buf.view(src_dtype).reshape(shape)
        return t.to(device=device, dtype=dtype if dtype is not None and t.is_floating_point() else t.dtype)

    def fingerprint(self, window: int = 4096) -> str:
        """A content identity read in well under a second: sha256 of the header (every name, dtype, shape and
        offset) and, for every tensor, its first and last `window` bytes. It covers exactly that: a change
        confined to the middle of a tensor's bytes leaves it unchanged. Training and merging change every
        element of the tensors they touch, so they change it; reading all of a 2-7 GB file would take seconds."""
        digest = hashlib.sha256(self.header_bytes)
        with open(self.path, "rb") as f:
            for _, _, begin, end in sorted(self.entries.values(), key=lambda e: e[2]):
                for start in sorted({begin, max(begin, end - window)}):
                    f.seek(self.data_start + start)
                    digest.update(f.read(min(window, end - start)))
        return digest.hexdigest()[:16]


def group_keys(keys, depth: int = 3) -> str:
    """'down_blocks.1.attentions (12 keys), ...' for a list of dotted names."""
    groups = Counter(".".join(k.split(".")[:depth]) for k in sorted(keys))
    return ", ".join(f"{g} ({n} key{'s' if n > 1 else ''})" for g, n in groups.items())


def load_strict(module: nn.Module, tensors: dict[str, torch.Tensor], origin: str) -> nn.Module:
    """Put `tensors` into `module` (built on the meta device) by assignment; every key must match exactly.

    Raises CheckpointError naming `origin` with the missing and unexpected keys grouped by prefix, and any
    shape mismatch. Returns the module frozen (requires_grad False) in eval mode.
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(expected[k].shape)}"
             for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        lines = [f"{origin}: the weights do not fit the {type(module).__name__} built for them."]
        if missing:
            lines.append(f"  missing {len(missing)} keys: {group_keys(missing)}")
        if unexpected:
            lines.append(f"  unexpected {len(unexpected)} keys: {group_keys(unexpected)}")
        lines += [f"  shape mismatch {w}" for w in wrong[:10]]
        raise CheckpointError("\n".join(lines))
    module.load_state_dict(tensors, strict=True, assign=True)
    return module.requires_grad_(False).eval()
