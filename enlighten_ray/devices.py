"""Which precision a device runs fast: bf16 on GPUs and on CPUs with native bf16 (AVX512-BF16 or
AMX), fp32 elsewhere (on an AVX2-only CPU, bf16 autocast ran our generator ~350x slower)."""

from __future__ import annotations

import contextlib
import functools
import platform
import sys

import torch

__all__ = ["autocast", "cpu_name", "native_bf16"]


@functools.cache
def _cpu_bf16() -> bool:
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def native_bf16(device: torch.device | str) -> bool:
    device = torch.device(device)
    return device.type == "cuda" or (device.type == "cpu" and _cpu_bf16())


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """A fresh bf16 autocast context where `precision` is bf16 and the device runs it natively;
    otherwise no autocast, with one line saying so."""
    device = torch.device(device)
    if precision != "bf16":
        return contextlib.nullcontext()
    if native_bf16(device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    _warn_fp32(device.type)
    return contextlib.nullcontext()


@functools.cache
def _warn_fp32(kind: str) -> None:
    print(f"enlighten-ray: this {kind} has no native bf16 (AVX512-BF16/AMX): running fp32", file=sys.stderr)


def cpu_name() -> str:
    """The CPU's model name, for benchmarks to print beside their figures."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()
