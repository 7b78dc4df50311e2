"""Whether a device runs a dtype well, decided before any model loads.

fp16 on a CPU runs, but slowly (few CPUs have fp16 matrix units) and overflows where fp32 does not; bf16 on a
CPU is fast only with AVX-512 BF16 or AMX; a GPU without bf16 support (before NVIDIA Ampere) cannot run it.
`device_problem` returns a warning to print, or raises ValueError for what cannot run at all, each naming the
alternative.
"""
import torch

_FAST_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_fast_bf16() -> bool | None:
    """True/False from the CPU's flags on Linux; None where they cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return None
    return any(flag in flags for flag in _FAST_BF16_FLAGS)


def device_problem(device: str, dtype: torch.dtype) -> str | None:
    """A warning for a device/dtype pair that runs badly, None if it runs well; ValueError if it cannot run."""
    kind = torch.device(device).type
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: no CUDA GPU is visible to torch (torch {torch.__version__}, "
                             f"CUDA build {torch.version.cuda}); use --device cpu, or install a CUDA build of torch")
        index = torch.device(device).index or 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) are visible")
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise ValueError(f"--dtype bf16: {torch.cuda.get_device_name(index)} does not support bfloat16; use "
                             "--dtype fp16 or fp32")
        return None
    if kind == "cpu" and dtype == torch.float16:
        return ("--dtype fp16 on a CPU runs many times slower than fp32 and can overflow to NaN; use --dtype bf16 "
                "(on CPUs with AVX-512 BF16 or AMX) or --dtype fp32")
    if kind == "cpu" and dtype == torch.bfloat16 and cpu_has_fast_bf16() is False:
        return ("--dtype bf16: this CPU has no AVX-512 BF16 or AMX units, so bf16 runs slower than fp32 here; "
                "use --dtype fp32")
    return None
