"""The ingest flow: frame -> validation -> group commit -> ACK; names and rejected batches."""
