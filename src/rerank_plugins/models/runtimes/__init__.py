"""Faster runtimes for both backends (ONNX Runtime fp32 / int8, OpenVINO fp32 / bf16, and ``fast``: the fastest
one installed that passes the quality guard); reduced precision is kept only if the guard agrees."""
