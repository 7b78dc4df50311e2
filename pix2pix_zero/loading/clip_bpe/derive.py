"""Derive `vocab.json` and `merges.txt` (the files transformers' CLIPTokenizer reads) from CLIP's
`bpe_simple_vocab_16e6.txt.gz`, as the CLIP tokenizer builds its vocabulary (Radford et al., arXiv:2103.00020):
the 256 byte-level symbols, the same 256 with the end-of-word mark `</w>`, one token per merge for the first
49152 - 256 - 2 merges, then `<|startoftext|>` and `<|endoftext|>`: 49408 ids.

Usage: python derive.py PATH/bpe_simple_vocab_16e6.txt.gz [OUT_DIR]   (OUT_DIR defaults to this folder)
"""

import gzip
import json
import sys
from pathlib import Path

N_MERGES = 49152 - 256 - 2  # CLIP keeps 49152 BPE tokens; two ids are left for the special tokens
SPECIAL = ["<|startoftext|>", "<|endoftext|>"]


def byte_symbols() -> list[str]:
    """The 256 printable characters that stand for bytes in byte-level BPE (GPT-2's table), in CLIP's order.

    Bytes that are printable and not whitespace stand for themselves and come first; the other 68 bytes are
    shifted to chr(256), chr(257), ... and follow in byte order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]


def read_merges(gz_path: Path) -> list[str]:
    """The first N_MERGES merge rules, each "left right"; the file's first line is a version header."""
    lines = gzip.open(gz_path, "rt", encoding="utf-8").read().split("\n")
    merges = lines[1 : 1 + N_MERGES]
    assert len(merges) == N_MERGES and all(len(m.split(" ")) == 2 for m in merges), "unexpected merges file"
    return merges


def build_vocab(merges: list[str]) -> dict[str, int]:
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + [m.replace(" ", "") for m in merges] + SPECIAL
    vocab = {token: i for i, token in enumerate(tokens)}
    assert len(vocab) == len(tokens) == 49408, "duplicate tokens"
    return vocab


def main(gz_path: str, out_dir: str = str(Path(__file__).parent)) -> None:
    merges = read_merges(Path(gz_path))
    out = Path(out_dir)
    (out / "vocab.json").write_text(json.dumps(build_vocab(merges), ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:])
