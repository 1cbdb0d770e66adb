"""What a measurement made on this machine depends on, so that another machine measures again.

int8 and bf16 kernels differ by instruction set (VNNI or not, AMX or not), and with them the numerics the quality
guard judges and the speeds ``runtime="fast"`` compares: a guard report or a runtime choice stored beside a model's
export is only reused on the same CPU (name, family and model) and feature flags with the same runtime packages.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

RUNTIME_PACKAGES: tuple[str, ...] = ("torch", "onnxruntime", "openvino")
CPU_NUMBERS: tuple[str, ...] = ("cpu family", "model", "CPU implementer", "CPU part")
"""/proc/cpuinfo fields that tell CPU generations apart: x86 family and model, ARM implementer and part."""


def cpu_fields(cpuinfo: str | None = None) -> dict[str, str]:
    """The first processor's ``/proc/cpuinfo`` fields (``model name``, ``flags``, ``cpu family``...); {} off Linux.

    ``cpuinfo``: that file's text, read from the machine when not given.
    """
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, colon, value = line.partition(":")
        if not colon and fields:  # a blank line ends the first processor
            break
        if colon:
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_identity(fields: dict[str, str]) -> tuple[str, str]:
    """``(cpu, sorted feature flags)`` from :func:`cpu_fields`.

    The model name alone is not enough: cloud guests often read only "AMD EPYC" for two generations whose bf16 and
    int8 kernels differ, so the CPU family and model numbers (x86) or implementer and part (ARM) are part of it.
    """
    name = fields.get("model name") or platform.processor() or platform.machine()
    numbers = [f"{key} {fields[key]}" for key in CPU_NUMBERS if key in fields]
    cpu = f"{name} ({', '.join(numbers)})" if numbers else name
    return cpu, " ".join(sorted((fields.get("flags") or fields.get("Features") or "").split()))


@functools.cache
def _cpu_and_versions() -> dict[str, Any]:
    cpu, flags = cpu_identity(cpu_fields())
    versions = {}
    for package in RUNTIME_PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            continue
    return {"cpu": cpu, "cpu_flags_sha1": hashlib.sha1(flags.encode()).hexdigest(), "versions": versions}


def cpu_and_versions() -> dict[str, Any]:
    """The CPU (:func:`cpu_identity`, flags hashed) and the installed runtime packages' versions.

    Read once per process (every guarded load and every "fast" choice asks, and neither can change meanwhile);
    each caller gets its own copy, since the dict goes into reports that callers may extend.
    """
    return copy.deepcopy(_cpu_and_versions())
