"""GLUE tasks: loading (GLUE_DIR folders or the Hugging Face hub) and metrics."""
