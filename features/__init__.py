"""Data contract, sources, validation/quarantine and point-in-time features (knows nothing of models)."""
