"""Inference backends: one interface, a local onnxruntime and a Triton implementation."""
