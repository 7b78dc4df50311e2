"""Sharding across processes (pix2pix_zero.tools.distributed): --shard parsing, torchrun's environment, and the
JSON gather over a real gloo process group. (Two torchrun ranks editing a folder: tests/test_cli.py.)"""
import torch.distributed as dist
import pytest

from pix2pix_zero.tools.distributed import Rank, current_rank, gather_json, parse_shard, rank_device


def test_shard_flag():
    assert parse_shard("0/2") == (0, 2) and parse_shard("3/4") == (3, 4)
    for bad in ("2/2", "-1/2", "1", "a/b", "1/0"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


def test_rank_from_torchrun_environment_else_shard_else_alone():
    env = {"RANK": "1", "WORLD_SIZE": "3", "LOCAL_RANK": "1"}
    assert current_rank(None, env) == Rank(1, 3, 1, True)
    assert current_rank("1/4", {}) == Rank(1, 4, 0, False)
    assert current_rank(None, {}) == Rank(0, 1, 0, False)
    assert current_rank(None, {"RANK": "0", "WORLD_SIZE": "1"}) == Rank(0, 1, 0, False)
    with pytest.raises(ValueError, match="drop --shard"):
        current_rank("0/2", env)
    assert rank_device("cuda", Rank(1, 3, 1, True)) == "cuda:1" and rank_device("cpu", Rank(1, 3, 1, True)) == "cpu"
    assert rank_device("cuda", Rank(0, 2, 0, False)) == "cuda"


def test_gather_carries_json_text_exactly(tmp_path):
    record = {"inputs": [{"input": "cät.png", "status": "done", "reason": None}], "seconds": 1.5, "x": [1, 2.5]}
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert gather_json(record, Rank(0, 1, 0, True)) == [record]
    finally:
        dist.destroy_process_group()
