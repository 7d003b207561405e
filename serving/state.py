"""What the service serves, and its hot reload.

A `Served` bundle is immutable: the champion scorer, the scored feature snapshot (or, with a
score store, a handle on a published version of the scores), the recommender and the
catalogue. `Live` builds a new bundle off to the side when the champion
alias or the feature snapshot changes and swaps one reference, so requests in flight finish
on the bundle they started with and none fails during a reload. A reload that fails leaves the
previous bundle serving and the service degraded (`Live.health`) until a later check succeeds.

With a score store, a worker is ready as soon as the store answers (the published version's
metadata and risk-list index): /score and /risk_list need nothing else. The model, the
recommender and consent (what /score_features and /recommend need) load right after, in the
reload thread; until then the bundle says `model_loaded=False` and those two endpoints answer
503 with Retry-After. MLflow, XGBoost and the model library are imported only then.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from features.errors import DataError
from serving.config import ServeConfig
from serving.limits import REBUILD
from serving.offers import Catalogue, load_catalogue
from serving.profit import costs_before, row_with_cost, with_cost_to_serve
from serving.score_store import (
    Published,
    RankIndex,
    ScoreStore,
    StorePopulation,
    open_score_store,
)
from training.registry.names import Alias, RegisteredModel

if TYPE_CHECKING:
    from features.campaign_log import CampaignLog
    from serving.store import FeatureStore

# MLflow, XGBoost and the model library are imported where a model is loaded or a population
# scored (the functions below), not here: a store-backed worker answers before it needs them.

log = logging.getLogger("retention.serving")
RETRY_FAILED_SECONDS = 60.0  # a model or snapshot that failed to load is tried again this late


@dataclass(frozen=True)
class Served:
    scorer: object
    scores: pd.DataFrame  # indexed by customer_id; empty when answered from a score store
    churn_sorted: np.ndarray | StorePopulation
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
    # With a score store: the published version answered, the store, its risk-list index.
    published: Published | None = None
    score_store: ScoreStore | None = None
    index: RankIndex | None = None
    # False while a store-backed bundle's model, recommender and consent are still loading.
    model_loaded: bool = True
    # Store-backed, when the published version has no cost to serve: the service's own, per
    # contacted customer (`serving.profit.costs_before`), added to each answer row.
    costs: pd.Series | None = None

    @property
    def published_version(self) -> str | None:
        return self.published.version if self.published else None

    @property
    def customers(self) -> int:
        return self.published.customers if self.published else len(self.scores)

    def rows(self, ids: list[str]) -> list[dict | None]:
        """Each customer's scores as a dict (None when not served), from memory or the
        score store: no DataFrame on the hot path."""
        if self.score_store is not None and self.published is not None:
            found = self.score_store.rows(self.published, ids)
            if self.costs is None:
                return found
            return [None if row is None else row_with_cost(cid, row, self.costs)
                    for cid, row in zip(ids, found, strict=True)]
        at = self.scores.index.get_indexer(ids)
        return [None if i < 0 else {c: values[i] for c, values in self.columns.items()}
                for i in at]

    def with_costs(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Rows read from the score store (indexed by customer_id) with the service's cost to
        serve, when it adds its own (`costs`)."""
        return frame if self.costs is None else with_cost_to_serve(frame, self.costs)


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
    from training.registry import aliased_version

    v = aliased_version(RegisteredModel.SCORER, alias)
    if v is None:
        raise DataError(f"{RegisteredModel.SCORER}@{alias}: not in the registry "
                        "(run `retention train --promote`)")
    return str(v.version), str(v.run_id)


def uplift_champion() -> str | None:
    """Version of the `uplift` champion, None when no uplift model is registered."""
    from training.registry import aliased_version

    v = aliased_version(RegisteredModel.UPLIFT, Alias.CHAMPION)
    return None if v is None else str(v.version)


@dataclass(frozen=True)
class Effects:
    version: str
    outcome: str
    predictions: pd.DataFrame  # aligned with the snapshot's rows, one column per offer


def load_effects(snapshot: pd.DataFrame) -> Effects | None:
    """Every customer's estimated uplift per covered offer, from the `uplift` champion."""
    from training.registry import load_uplift

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


def _no_consent() -> pd.DataFrame:
    from features.contract import CHANNELS

    return pd.DataFrame(columns=list(CHANNELS), index=pd.Index([], name="customer_id"))


def load_consent(config: ServeConfig) -> pd.DataFrame:
    """consent_<channel> flags per customer (the customers table as `features.validate` reads
    it: bad rows quarantined, unknown consent is no consent); no table means no consent."""
    if config.customers is None:
        return _no_consent()
    from features.config import load_source_config
    from features.contract import CHANNELS, CONSENT_PREFIX
    from features.validate import load

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


def with_effects(scores: pd.DataFrame, snapshot: pd.DataFrame, uplift: str | None
                 ) -> tuple[pd.DataFrame, Effects | None]:
    """Scores (from `score_population`) plus the uplift champion's effects, one row per
    customer indexed by customer_id: what the service answers from."""
    effect = load_effects(snapshot) if uplift else None
    if effect is not None:
        scores = pd.concat([scores, effect.predictions.add_prefix("uplift_")], axis=1)
    scores = scores.drop_duplicates("customer_id", keep="last").set_index("customer_id")
    return scores, effect


def component_params(scorer) -> dict[str, dict[str, float]]:
    """The scorer's BTYD components as parameters (what a score store publishes)."""
    c = scorer.components
    return {name: dict(getattr(c, name).params_) for name in ("bg", "pnbd", "gg")}


def components_of(params: dict[str, dict[str, float]]):
    """Components predicting with published parameters (`component_params`): a
    `training.components.Components`."""
    from training.components import PNBD_MAX_PARAM, Components
    from training.models import BetaGeoModel, GammaGammaModel, ParetoNBDModel

    return Components(BetaGeoModel.from_params(params["bg"]),
                      ParetoNBDModel.from_params(params["pnbd"], max_param=PNBD_MAX_PARAM),
                      GammaGammaModel.from_params(params["gg"]))


def publish_scores(store: ScoreStore, registered, scorer, snapshot: pd.DataFrame,
                   scores: pd.DataFrame, *, model: tuple[str, str], features_version: str,
                   keep: int = 2, costs: pd.Series | None = None) -> str:
    """Publish a scored snapshot (`score_population` by `scorer`, i.e. `registered` for the
    snapshot's population) with the uplift champion's effects and, given `costs`
    (`serving.profit.costs_before`), the cost to serve; returns the new version."""
    uplift = uplift_champion()
    scores, effect = with_effects(scores, snapshot, uplift)
    scores = with_cost_to_serve(scores, costs)
    return store.publish(
        scores, model_version=model[0], model_run_id=model[1],
        features_version=features_version, tier_floors=tier_floors(snapshot),
        components=None if scorer is registered else component_params(scorer),
        uplift_version=effect.version if effect else None,
        uplift_outcome=effect.outcome if effect else None, keep=keep)


class Live:
    """The current `Served` bundle, rebuilt in the background when its sources change."""

    def __init__(self, config: ServeConfig, watch: bool = True,
                 campaign_log: CampaignLog | None = None) -> None:
        """`campaign_log` (the service's): with the catalogue, each bundle's answers carry
        the cost to serve over the window before its as_of (`serving.profit`)."""
        self.config = config
        self.scores: ScoreStore | None = None
        self.store: FeatureStore | None = None
        self._configured = False
        self._model_lock = threading.Lock()  # one model load at a time (start, reloads)
        self._swap = threading.Lock()  # one writer of `current` at a time
        self._model: tuple[tuple[str, str], object, object | None] | None = None
        self.consent: pd.DataFrame | None = None
        if config.scores:  # ready once the store answers; the model loads after (see above)
            self.scores = open_score_store(config.scores)
        else:
            from serving.store import open_store

            self._configure()
            self.store = open_store(config.store, config.features)
            self.consent = load_consent(config)
        self.catalogue = load_catalogue(config.offers) if config.offers else None
        self.campaign_log = campaign_log
        self.reloads = 0
        self.reload_errors = 0
        self.failure: str | None = None  # why the last reload attempt failed; None once one works
        self.failed_at: str | None = None
        self._failed: tuple | None = None  # the sources of the last failed build
        self._retry_at = 0.0
        self._console: Served | None = None
        self._console_lock = threading.Lock()
        started = time.perf_counter()
        self.current = self._build(*self._sources(), with_model=not watch)
        cur = self.current
        if cur.published is not None:
            log.info("answering from scores %s at %s (%s v%s, features %s, %d customers) in "
                     "%.1fs%s", cur.published.version, self.scores.url, RegisteredModel.SCORER,
                     cur.model_version, cur.features_version, cur.customers,
                     time.perf_counter() - started,
                     "" if cur.model_loaded else "; the model loads next")
        else:
            log.info("loaded %s v%s and features %s (%d customers) in %.1fs",
                     RegisteredModel.SCORER, cur.model_version, cur.features_version,
                     cur.customers, time.perf_counter() - started)
        self._stop = threading.Event()
        if watch:
            threading.Thread(target=self._watch, name="retention-reload", daemon=True).start()

    def _configure(self) -> None:
        """Point MLflow at the config's tracking URI (imports MLflow), once."""
        if not self._configured:
            from training.registry import configure

            configure(self.config.tracking_uri)
            self._configured = True

    def _registered(self, version: str, run_id: str) -> tuple[object, object | None]:
        """(registered scorer, recommender) of a model version, loaded once: a publish by the
        same model reuses them. Loads consent too, the first time."""
        with self._model_lock:
            started = time.perf_counter()
            self._configure()
            if self.consent is None:
                self.consent = load_consent(self.config)
            if self._model is None or self._model[0] != (version, run_id):
                from training.registry import load_recommender, load_scorer

                self._model = ((version, run_id), load_scorer(version),
                               load_recommender(run_id))
                log.info("loaded %s v%s for /score_features and /recommend in %.1fs",
                         RegisteredModel.SCORER, version, time.perf_counter() - started)
            return self._model[1], self._model[2]

    def _with_model(self, served: Served) -> Served:
        """A store-backed bundle with its model, recommender and consent."""
        from serving import batch  # noqa: F401  (what /score_features runs: off its path)

        meta = served.published
        assert meta is not None
        scorer, recommender = self._registered(meta.model_version, meta.model_run_id)
        if meta.components:
            scorer = scorer.with_components(components_of(meta.components))
        return replace(served, scorer=scorer, recommender=recommender, consent=self.consent,
                       model_loaded=True)

    def load_model(self) -> bool:
        """Give the current store-backed bundle its model (the reload thread does it right
        after start); True when it was missing and is now loaded."""
        cur = self.current
        if cur.model_loaded:
            return False
        loaded = self._with_model(cur)
        with self._swap:
            if self.current is not cur:  # a reload swapped in a newer bundle meanwhile
                return False
            self.current = loaded
        gc.freeze()  # the model lives as long as the bundle (see Retention.__init__)
        return True

    def _sources(self) -> tuple:
        """What the bundle is built from: (champion, features version, uplift champion), or
        with a score store the published version alone (it names its model and features)."""
        if self.scores is not None:
            return (self.scores.version(),)
        assert self.store is not None
        return champion(self.config.model_alias), self.store.version(), uplift_champion()

    @staticmethod
    def _served_sources(cur: Served) -> tuple:
        if cur.published is not None:
            return (cur.published.version,)
        return (cur.model_version, cur.model_run_id), cur.features_version, cur.uplift_version

    def _build(self, *sources, with_model: bool = True) -> Served:
        if self.scores is not None:
            return self._build_published(*sources, with_model=with_model)
        return self._build_scored(*sources)

    def _build_published(self, version: str, *, with_model: bool = True) -> Served:
        """A bundle answering from a published version: its metadata and risk-list index, and
        (`with_model`) its model for /score_features; nothing scored here."""
        assert self.scores is not None
        meta = self.scores.meta(version)
        empty = pd.DataFrame(columns=list(meta.columns), index=pd.Index([], name="customer_id"))
        served = Served(
            scorer=None, scores=empty, churn_sorted=StorePopulation(self.scores, meta),
            model_version=meta.model_version, model_run_id=meta.model_run_id,
            features_version=meta.features_version, as_of=meta.as_of,
            recommender=None, catalogue=self.catalogue, consent=_no_consent(),
            uplift_version=meta.uplift_version,
            uplift_offers=tuple(c.removeprefix("uplift_") for c in meta.columns
                                if c.startswith("uplift_")),
            uplift_outcome=meta.uplift_outcome, tier_floors=meta.tier_floors,
            published=meta, score_store=self.scores, index=self.scores.index(meta),
            model_loaded=False,
            costs=None if "cost_to_serve" in meta.columns else self._costs(meta.as_of))
        return self._with_model(served) if with_model else served

    def _costs(self, as_of: str) -> pd.Series | None:
        """Each contacted customer's cost to serve before as_of, from the campaign log at the
        catalogue's prices; None without a catalogue."""
        if self.campaign_log is None or self.catalogue is None or not as_of:
            return None
        return costs_before(self.campaign_log, self.catalogue, as_of)

    def _build_scored(self, model: tuple[str, str], features_version: str,
                      uplift: str | None) -> Served:
        from serving.batch import score_population
        from training.registry import load_recommender, load_scorer

        assert self.store is not None and self.consent is not None
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
        scores, effect = with_effects(scores, snapshot, uplift)
        as_of = str(snapshot["as_of"].max())
        scores = with_cost_to_serve(scores, self._costs(as_of))
        served = Served(
            scorer=scorer, scores=scores,
            churn_sorted=np.sort(scores["churn_probability"].to_numpy(dtype="float64")),
            model_version=version, model_run_id=run_id, features_version=features_version,
            as_of=as_of, recommender=load_recommender(run_id),
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
        With a score store, also load the current bundle's model if it is still missing.
        Raises when the new bundle (or the model) cannot be built: the previous one keeps
        serving, the failure is kept for `health`, and the same sources are tried again only
        after RETRY_FAILED_SECONDS (each attempt loads the model and scores the population)."""
        try:
            target = self._sources()
            cur = self.current
            retry_later = self._failed == target and time.monotonic() < self._retry_at
            if target == self._served_sources(cur):
                if self.scores is not None:
                    self.scores.ping()
                if not cur.model_loaded and not retry_later:
                    try:
                        self.load_model()
                    except Exception:
                        self._failed = target
                        self._retry_at = time.monotonic() + RETRY_FAILED_SECONDS
                        raise
                if self.current.model_loaded:
                    self.failure = self.failed_at = None
                return False
            if retry_later:
                return False
            started = time.perf_counter()
            REBUILD.start()
            try:
                new = self._build(*target)
                with self._swap:
                    self.current = new
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
                 self.current.customers, time.perf_counter() - started)
        return True

    def for_console(self) -> Served:
        """The bundle with the whole population in memory, as the console's overview and
        sortable lists read it: the current bundle, or with a score store the published
        version read once per version (only a worker whose console is used holds it)."""
        if not self.current.model_loaded:  # the console recommends too: wait for the model
            self.load_model()
        cur = self.current
        if cur.published is None or cur.score_store is None:
            return cur
        with self._console_lock:
            if self._console is None or self._console.published != cur.published:
                frame = cur.with_costs(cur.score_store.frame(cur.published))
                self._console = replace(
                    cur, scores=frame, columns={c: frame[c].to_numpy() for c in frame.columns},
                    churn_sorted=np.sort(frame["churn_probability"].to_numpy(dtype="float64")),
                    score_store=None, index=None, costs=None)
            return self._console

    def _watch(self) -> None:
        wait = 0.0 if not self.current.model_loaded else self.config.reload_seconds
        while not self._stop.wait(wait):
            wait = self.config.reload_seconds
            try:
                self.check()
            except Exception:  # noqa: BLE001 - keep serving the last good bundle
                log.warning("reload failed, still serving the previous bundle: %s", self.failure)

    def health(self) -> dict[str, object]:
        """Readiness detail: `ready`, or `degraded` with the reason when the last reload attempt
        failed (the previous bundle still answers), the versions being served, and whether
        the model for /score_features and /recommend is loaded yet (store-backed)."""
        cur = self.current
        return {"status": "degraded" if self.failure else "ready", "reason": self.failure,
                "failed_at": self.failed_at, "model_version": cur.model_version,
                "model_loaded": cur.model_loaded,
                "features_version": cur.features_version, "uplift_version": cur.uplift_version,
                "scores_version": cur.published_version, "loaded_at": cur.loaded_at,
                "reloads": self.reloads, "reload_errors": self.reload_errors}

    def stop(self) -> None:
        self._stop.set()


def changes(old: Served, new: Served) -> str:
    """What a reload changed, e.g. `model 1 -> 2, features as_of=...@... unchanged, uplift 1
    unchanged`."""
    parts = []
    for name, attr in (("model", "model_version"), ("features", "features_version"),
                       ("uplift", "uplift_version"), ("scores", "published_version")):
        before, after = getattr(old, attr), getattr(new, attr)
        parts.append(f"{name} {before} -> {after}" if before != after
                     else f"{name} {after} unchanged")
    return ", ".join(parts)


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one line of at most `limit` characters, its type first."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
