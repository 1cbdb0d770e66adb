"""The machine a benchmark ran on, read from the machine itself (never typed in: sessions run on different CPUs)."""

from __future__ import annotations

import os
import platform
import sys
from datetime import datetime, timezone

from rerank_plugins.models.runtimes.machine import cpu_fields


def describe_machine() -> str:
    """``CPU model, N cores, SIMD flags that matter for inference``, e.g. ``Intel Xeon, 2 cores, AVX-512 VNNI AMX``."""
    fields = cpu_fields()
    model, flags = fields.get("model name", platform.machine()), set(fields.get("flags", "").split())
    # A guest's model name can be generic ("Intel(R) Xeon(R) Processor"): family and model name the generation.
    if "cpu family" in fields:
        model += f" (family {fields['cpu family']} model {fields.get('model', '?')})"
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


def fp32_peak_facts() -> tuple[float, int]:
    """Nominal clock (GHz) and fp32 lanes per FMA unit, the two CPU facts an fp32 peak needs beside the core count.

    16 lanes with AVX-512, 8 with AVX2, and 8 on AMD family 25 (Zen 4): it runs AVX-512 instructions on 256-bit
    FMA units, so its fp32 peak is that of AVX2.
    """
    fields = cpu_fields()
    avx512 = "avx512f" in fields.get("flags", "").split()
    zen4 = fields.get("vendor_id") == "AuthenticAMD" and fields.get("cpu family") == "25"
    return float(fields.get("cpu MHz", "0")) / 1000, 16 if avx512 and not zen4 else 8


def result_header(title: str, *machine_notes: str) -> str:
    """The lines every committed result starts with: what was run, when and where, so anyone can rerun it and knows
    which CPU its figures belong to. ``machine_notes`` add run-specific facts (threads, load average)."""
    machine = ", ".join(
        [describe_machine(), platform.platform(), f"Python {platform.python_version()}", *machine_notes]
    )
    return (
        f"# {title}\n\ncommand: `python {' '.join(sys.argv)}`  \n"
        f"date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}  \nmachine: {machine}"
    )
