"""The machine a benchmark ran on, read from the machine itself (never typed in: sessions run on different CPUs)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe_machine() -> str:
    """``CPU model, N cores, SIMD flags that matter for inference``, e.g. ``Intel Xeon, 2 cores, AVX-512 VNNI AMX``."""
    model, flags, ids = platform.machine(), set(), {}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == platform.machine():
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
            elif key.strip() in ("cpu family", "model"):
                ids.setdefault(key.strip(), value.strip())
    if ids:  # a guest's model name can be generic ("Intel(R) Xeon(R) Processor"); family/model name the generation
        model += f" (family {ids.get('cpu family', '?')} model {ids.get('model', '?')})"
    simd = [
        name
        for flag, name in (
            ("avx2", "AVX2"),
            ("avx512f", "AVX-512"),
            ("avx512_vnni", "VNNI"),
            ("avx512_bf16", "AVX-512 BF16"),
            ("amx_bf16", "AMX"),
        )
        if flag in flags
    ]
    return f"{model}, {os.cpu_count()} cores, {' '.join(simd) or 'no AVX2'}, no GPU"
