"""What a measurement made on this machine depends on, so that another machine measures again.

int8 and bf16 kernels differ by instruction set (VNNI or not, AMX or not), and with them the numerics the quality
guard judges and the speeds ``runtime="fast"`` compares: a guard report or a runtime choice stored beside a model's
export is only reused on the same CPU model and feature flags with the same runtime packages.
"""

from __future__ import annotations

import functools
import hashlib
import platform
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

RUNTIME_PACKAGES: tuple[str, ...] = ("torch", "onnxruntime", "openvino")


@functools.cache
def cpu_and_versions() -> dict[str, Any]:
    """The CPU (model name and a hash of its feature flags) and the installed runtime packages' versions.

    Read once per process: every guarded load and every "fast" choice asks, and neither can change meanwhile.
    """
    cpu, flags = platform.processor() or platform.machine(), ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
        name, found = re.search(r"^model name\s*:\s*(.*)$", text, re.M), re.search(r"^flags\s*:\s*(.*)$", text, re.M)
        cpu = name.group(1).strip() if name else cpu
        flags = " ".join(sorted(found.group(1).split())) if found else ""
    versions = {}
    for package in RUNTIME_PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            continue
    return {"cpu": cpu, "cpu_flags_sha1": hashlib.sha1(flags.encode()).hexdigest(), "versions": versions}
