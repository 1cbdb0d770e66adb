"""A stored guard report or runtime choice is keyed by the machine: two CPU generations must not share a key."""

from __future__ import annotations

from rerank_plugins.models.runtimes import machine

ZEN = """processor\t: {n}
vendor_id\t: AuthenticAMD
cpu family\t: {family}
model\t\t: {model}
model name\t: AMD EPYC
flags\t\t: fpu avx2 avx512f avx512_bf16
"""
ARM = "processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd bf16\nCPU implementer\t: 0x41\nCPU part\t: 0xd40\n"


def test_cpu_generations_with_the_same_name_and_flags_are_told_apart():
    zen4 = machine.cpu_fields(ZEN.format(n=0, family=25, model=17) + "\n" + ZEN.format(n=1, family=26, model=2))
    zen5 = machine.cpu_fields(ZEN.format(n=0, family=26, model=2))
    assert zen4["cpu family"] == "25", "the first processor's fields"
    assert machine.cpu_identity(zen4) == ("AMD EPYC (cpu family 25, model 17)", "avx2 avx512_bf16 avx512f fpu")
    assert machine.cpu_identity(zen5)[0] == "AMD EPYC (cpu family 26, model 2)"
    cpu, flags = machine.cpu_identity(machine.cpu_fields(ARM))
    assert cpu.endswith("(CPU implementer 0x41, CPU part 0xd40)") and flags == "asimd bf16 fp"


def test_each_caller_gets_its_own_copy_of_the_machine_key():
    key = machine.cpu_and_versions()
    key["versions"]["torch"] = "changed by a caller"
    key["cpu"] = "changed"
    assert machine.cpu_and_versions()["cpu"] != "changed"
    assert machine.cpu_and_versions()["versions"].get("torch") != "changed by a caller"
