"""The data side: the data contract, sources and validation with quarantine, point-in-time
features and labels (Ibis expressions run by DuckDB, PostgreSQL or Spark), RFM segments and
value tiers, the campaign log, and the seeded synthetic retailer. Knows nothing of models.

The public names below load on first use, so importing one module (e.g. `features.errors`)
does not import the feature engine.
"""

from features.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "CHANNELS": "features.contract",
    "Channel": "features.contract",
    "CampaignLog": "features.campaign_log",
    "DataError": "features.errors",
    "SourceConfig": "features.config",
    "SyntheticConfig": "features.synthetic",
    "ValidationResult": "features.validate",
    "campaign_frame": "features.campaign_log",
    "feature_frames": "features.engine",
    "generate": "features.synthetic",
    "load": "features.validate",
    "load_source_config": "features.config",
    "partitions": "features.engine",
    "read_features": "features.engine",
})
