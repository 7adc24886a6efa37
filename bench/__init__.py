"""The statsworker benchmark: ingest, reads, SQL baselines and memory, as one table."""
