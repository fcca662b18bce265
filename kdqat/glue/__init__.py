"""GLUE: the nine tasks (files, columns, labels, metrics), loading their splits, and scoring predictions."""
