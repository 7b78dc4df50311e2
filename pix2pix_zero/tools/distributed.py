"""Many processes editing one folder: torchrun ranks, or `--shard i/n` jobs with no process group.

Under `torchrun --nproc_per_node N`, the rank and world size come from torchrun's environment (RANK,
WORLD_SIZE, LOCAL_RANK); each rank takes its shard of the sorted inputs (folder.shard), runs on cuda:LOCAL_RANK
when CUDA is present, and writes its own summary; then rank 0 gathers the summaries over a process group
(gloo on CPU, nccl on GPU) and writes the merged one. Only JSON text crosses ranks (as bytes in a uint8 tensor),
never pickled objects. A rank whose run failed still joins the gather, so it never leaves the others waiting.
`--shard i/n` (SLURM array jobs, several machines on one shared folder) uses no process group: each job writes
its shard's summary and the last to finish merges them from the files.
"""
import json
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Rank:
    index: int  # 0-based
    count: int
    local: int  # the GPU index on this machine
    torchrun: bool  # whether a process group joins the ranks


def parse_shard(text: str) -> tuple[int, int]:
    """'1/4' -> (1, 4), checked: 0 <= i < n."""
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like I/N, 0-based (e.g. --shard 0/2 and --shard 1/2), not {text!r}") \
            from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard {text}: need N >= 1 and 0 <= I < N (0-based: --shard 0/2 and --shard 1/2)")
    return i, n


def current_rank(shard_text: str | None = None, environ=os.environ) -> Rank:
    """This process's place: from torchrun's environment, else from --shard, else the only one."""
    if "WORLD_SIZE" in environ and "RANK" in environ and int(environ["WORLD_SIZE"]) > 1:
        if shard_text:
            raise ValueError("--shard splits inputs without torchrun; under torchrun the ranks split them: "
                             "drop --shard")
        return Rank(int(environ["RANK"]), int(environ["WORLD_SIZE"]), int(environ.get("LOCAL_RANK", 0)), True)
    if shard_text:
        i, n = parse_shard(shard_text)
        return Rank(i, n, 0, False)
    return Rank(0, 1, 0, False)


def rank_device(device: str, rank: Rank) -> str:
    """cuda -> cuda:LOCAL_RANK under torchrun; any other device as given."""
    return f"cuda:{rank.local}" if rank.torchrun and device == "cuda" else device


def start(rank: Rank, device: str, timeout_s: float = 24 * 3600) -> None:
    """Join torchrun's process group (a no-op for --shard and single runs). The timeout bounds how long the
    final gather waits for a slow rank: a whole shard of edits may take hours."""
    if rank.torchrun and not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(torch.device(device))
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))


def gather_json(record: dict, rank: Rank) -> list[dict] | None:
    """Every rank's record on rank 0 (None elsewhere), as UTF-8 JSON in uint8 tensors."""
    device = torch.device("cuda", rank.local) if dist.get_backend() == "nccl" else torch.device("cpu")
    data = torch.frombuffer(bytearray(json.dumps(record).encode()), dtype=torch.uint8).to(device)
    sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(rank.count)]
    dist.all_gather(sizes, torch.tensor([data.numel()], dtype=torch.int64, device=device))
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros(longest, dtype=torch.uint8, device=device)
    padded[:data.numel()] = data
    chunks = [torch.zeros(longest, dtype=torch.uint8, device=device) for _ in range(rank.count)]
    dist.all_gather(chunks, padded)
    if rank.index != 0:
        return None
    return [json.loads(bytes(c[:int(s.item())].cpu().tolist()).decode()) for c, s in zip(chunks, sizes)]


def finish() -> None:
    """Leave the process group, after a barrier so no rank exits while rank 0 still writes the summary."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
