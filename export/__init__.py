"""ONNX export of kdqat students (QDQ deploy graph, packed storage graph). Filled by the export issue."""
