"""Data contract, sources, validation/quarantine, point-in-time features; knows no models."""
