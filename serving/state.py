"""What the service serves, and its hot reload.

A `Served` bundle is immutable: the champion scorer, the scored feature snapshot, the
recommender and the catalogue. `Live` builds a new bundle off to the side when the champion
alias or the feature snapshot changes and swaps one reference, so requests in flight finish
on the bundle they started with and none fails during a reload. A reload that fails leaves the
previous bundle serving and the service degraded (`Live.health`) until a later check succeeds.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.errors import DataError
from serving.batch import score_population
from serving.config import ServeConfig
from serving.limits import REBUILD
from serving.offers import Catalogue, load_catalogue
from serving.store import FeatureStore, open_store
from training.registry import (
    Alias,
    RegisteredModel,
    aliased_version,
    configure,
    load_recommender,
    load_scorer,
    load_uplift,
)

log = logging.getLogger("retention.serving")
RETRY_FAILED_SECONDS = 60.0  # a model or snapshot that failed to load is tried again this late


@dataclass(frozen=True)
class Served:
    scorer: object
    scores: pd.DataFrame  # indexed by customer_id
    churn_sorted: np.ndarray
    model_version: str
    model_run_id: str
    features_version: str
    as_of: str
    recommender: object | None
    catalogue: Catalogue | None
    consent: pd.DataFrame  # indexed by customer_id, one bool column per channel
    uplift_version: str | None = None
    uplift_offers: tuple[str, ...] = ()  # offers whose effect comes from the uplift model
    uplift_outcome: str | None = None
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # scores, column by column
    tier_floors: tuple[tuple[str, float], ...] = ()  # see tier_floors()
    loaded_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())


def tier_floors(snapshot: pd.DataFrame) -> tuple[tuple[str, float], ...]:
    """Lowest spend_365d of each value tier in the snapshot, best tier first.

    The tiers are ranks on spend_365d (`features.segments.add_value_tier`), so a row sent to
    /score_features belongs to the first tier whose floor its spend reaches: the tier it would
    have had in the snapshot, whatever tier shares the snapshot was built with.
    """
    if "value_tier" not in snapshot.columns or snapshot.empty:
        return ()
    floors = snapshot.groupby("value_tier")["spend_365d"].min().sort_values(ascending=False)
    return tuple((str(k), float(v)) for k, v in floors.items())


def champion(alias: str) -> tuple[str, str]:
    """(version, run id) of the aliased `customer-scorer`."""
    v = aliased_version(RegisteredModel.SCORER, alias)
    if v is None:
        raise DataError(f"{RegisteredModel.SCORER}@{alias}: not in the registry "
                        "(run `retention train --promote`)")
    return str(v.version), str(v.run_id)


def uplift_champion() -> str | None:
    """Version of the `uplift` champion, None when no uplift model is registered."""
    v = aliased_version(RegisteredModel.UPLIFT, Alias.CHAMPION)
    return None if v is None else str(v.version)


@dataclass(frozen=True)
class Effects:
    version: str
    outcome: str
    predictions: pd.DataFrame  # aligned with the snapshot's rows, one column per offer


def load_effects(snapshot: pd.DataFrame) -> Effects | None:
    """Every customer's estimated uplift per covered offer, from the `uplift` champion."""
    found = load_uplift()
    if found is None:
        return None
    version, fit = found
    missing = [c for c in fit.features if c not in snapshot.columns]
    if missing:
        log.warning("uplift v%s needs features %s the snapshot lacks; using priors", version,
                    missing)
        return None
    rows = snapshot[fit.features].reset_index(drop=True)
    return Effects(version, fit.outcome, fit.learner.predict_uplift(rows))


def load_consent(config: ServeConfig) -> pd.DataFrame:
    """consent_<channel> flags per customer (the customers table as `features.validate` reads
    it: bad rows quarantined, unknown consent is no consent); no table means no consent."""
    from features.config import load_source_config
    from features.contract import CHANNELS, CONSENT_PREFIX
    from features.validate import load

    if config.customers is None:
        return pd.DataFrame(columns=list(CHANNELS), index=pd.Index([], name="customer_id"))
    cfg = load_source_config(config.customers)
    if cfg.table != "customers":
        raise DataError(f"{config.customers}: a {cfg.table} table, expected customers")
    result = load(cfg)
    if result.counts:
        log.warning("customers: %d rows quarantined %s", sum(result.counts.values()),
                    result.counts)
    frame = result.accepted
    out = pd.DataFrame(index=frame["customer_id"].astype(str).rename("customer_id"))
    for channel in CHANNELS:
        col = f"{CONSENT_PREFIX}{channel}"
        out[channel] = frame[col].fillna(False).astype(bool).to_numpy() if col in frame else False
    return out


class Live:
    """The current `Served` bundle, rebuilt in the background when its sources change."""

    def __init__(self, config: ServeConfig, watch: bool = True) -> None:
        self.config = config
        configure(config.tracking_uri)
        self.store: FeatureStore = open_store(config.store, config.features)
        self.catalogue = load_catalogue(config.offers) if config.offers else None
        self.consent = load_consent(config)
        self.reloads = 0
        self.reload_errors = 0
        self.failure: str | None = None  # why the last reload attempt failed; None once one works
        self.failed_at: str | None = None
        self._failed: tuple | None = None  # the sources of the last failed build
        self._retry_at = 0.0
        started = time.perf_counter()
        self.current = self._build(champion(config.model_alias), self.store.version(),
                                   uplift_champion())
        log.info("loaded %s v%s and features %s (%d customers) in %.1fs", RegisteredModel.SCORER,
                 self.current.model_version, self.current.features_version,
                 len(self.current.scores), time.perf_counter() - started)
        self._stop = threading.Event()
        if watch:
            threading.Thread(target=self._watch, name="retention-reload", daemon=True).start()

    def _build(self, model: tuple[str, str], features_version: str,
               uplift: str | None) -> Served:
        version, run_id = model
        scorer = load_scorer(version)
        snapshot = self.store.snapshot()
        missing = [c for c in scorer.input_columns if c not in snapshot.columns]
        if missing:
            raise DataError(f"feature snapshot {features_version}: missing columns {missing}")
        refreshed = scorer.for_population(snapshot)
        if refreshed is not scorer:
            log.info("BTYD components refitted on the snapshot's population (model data end %s)",
                     scorer.metadata.get("data_end"))
        scorer = refreshed
        scores = score_population(scorer, snapshot, self.config.risk_bands)
        effect = load_effects(snapshot) if uplift else None
        if effect is not None:
            scores = pd.concat([scores, effect.predictions.add_prefix("uplift_")], axis=1)
        scores = scores.drop_duplicates("customer_id", keep="last").set_index("customer_id")
        served = Served(
            scorer=scorer, scores=scores,
            churn_sorted=np.sort(scores["churn_probability"].to_numpy(dtype="float64")),
            model_version=version, model_run_id=run_id, features_version=features_version,
            as_of=str(snapshot["as_of"].max()), recommender=load_recommender(run_id),
            catalogue=self.catalogue, consent=self.consent,
            uplift_version=effect.version if effect else None,
            uplift_offers=tuple(effect.predictions.columns) if effect else (),
            uplift_outcome=effect.outcome if effect else None,
            columns={c: scores[c].to_numpy() for c in scores.columns},
            tier_floors=tier_floors(snapshot),
        )
        return served

    def check(self) -> bool:
        """Rebuild if the champion or the snapshot changed; True when a new bundle is live.
        Raises when the new bundle cannot be built: the previous one keeps serving, the
        failure is kept for `health`, and the same sources are tried again only after
        RETRY_FAILED_SECONDS (each attempt loads the model and scores the population)."""
        try:
            model = champion(self.config.model_alias)
            features_version = self.store.version()
            uplift = uplift_champion()
            cur = self.current
            if (model[0], features_version, uplift) == (cur.model_version, cur.features_version,
                                                       cur.uplift_version):
                self.failure = self.failed_at = None
                return False
            target = (model, features_version, uplift)
            if self._failed == target and time.monotonic() < self._retry_at:
                return False
            started = time.perf_counter()
            REBUILD.start()
            try:
                self.current = self._build(model, features_version, uplift)
            except Exception:
                self._failed, self._retry_at = target, time.monotonic() + RETRY_FAILED_SECONDS
                REBUILD.end()
                raise
        except Exception as exc:
            self.reload_errors += 1
            self.failure = one_line(exc)
            self.failed_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            raise
        self.reloads += 1
        self.failure = self.failed_at = self._failed = None
        # The new bundle lives until the next reload: collect the old one, freeze the new one
        # out of the collector's full passes (see Retention.__init__).
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        REBUILD.end()
        log.info("reloaded: %s (%d customers) in %.1fs", changes(cur, self.current),
                 len(self.current.scores), time.perf_counter() - started)
        return True

    def _watch(self) -> None:
        while not self._stop.wait(self.config.reload_seconds):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - keep serving the last good bundle
                log.warning("reload failed, still serving the previous bundle: %s", self.failure)

    def health(self) -> dict[str, object]:
        """Readiness detail: `ready`, or `degraded` with the reason when the last reload attempt
        failed (the previous bundle still answers), and the versions being served."""
        cur = self.current
        return {"status": "degraded" if self.failure else "ready", "reason": self.failure,
                "failed_at": self.failed_at, "model_version": cur.model_version,
                "features_version": cur.features_version, "uplift_version": cur.uplift_version,
                "loaded_at": cur.loaded_at, "reloads": self.reloads,
                "reload_errors": self.reload_errors}

    def stop(self) -> None:
        self._stop.set()


def changes(old: Served, new: Served) -> str:
    """What a reload changed, e.g. `model 1 -> 2, features as_of=...@... unchanged, uplift 1
    unchanged`."""
    parts = []
    for name, attr in (("model", "model_version"), ("features", "features_version"),
                       ("uplift", "uplift_version")):
        before, after = getattr(old, attr), getattr(new, attr)
        parts.append(f"{name} {before} -> {after}" if before != after
                     else f"{name} {after} unchanged")
    return ", ".join(parts)


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one line of at most `limit` characters, its type first."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
