"""The tidy table of a run: every metric job's rows in one ``metrics.parquet``, and the steps whose
checkpoint failed in ``missing_steps.csv`` (:mod:`.aggregate`)."""
