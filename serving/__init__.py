"""Answers for people and systems: the BentoML service (`serving.service`) and its answers,
the online feature store, offers and their policy (eligibility, consent, caps, control
groups), batch scoring, and the `retention` command line (`serving.cli`).

The public names below load on first use (the service module starts BentoML).
"""

from features.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "Catalogue": "serving.offers",
    "MemoryStore": "serving.store",
    "RedisStore": "serving.store",
    "load_catalogue": "serving.offers",
    "main": "serving.cli",
    "open_store": "serving.store",
    "score_population": "serving.batch",
    "write_scores": "serving.batch",
})
