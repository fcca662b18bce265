"""Where a run's examples come from: GLUE folders, your own files (CSV, TSV, JSON Lines, JSON, Parquet) or a
Hugging Face dataset, behind one interface (`DataSource`) that training, export, eval and serving share."""
