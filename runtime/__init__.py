"""Inference runtimes (onnxruntime, TensorRT) for exported students. Filled by the runtime issues."""
