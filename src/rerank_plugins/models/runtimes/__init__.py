"""Faster runtimes for both backends (ONNX Runtime fp32 / int8), each kept only if the quality guard agrees."""
