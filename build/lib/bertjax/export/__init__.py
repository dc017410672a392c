"""Export of (compressed) bertjax models to other runtimes.

`bertjax.export.onnx`: ONNX through jax2onnx, ONNX Runtime parity checks and
ORT dynamic int8. Its imports (jax2onnx, onnx, onnxruntime) are optional
packages and load only when that module is imported.
"""
