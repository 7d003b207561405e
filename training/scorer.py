"""The customer scorer: one object mapping feature rows to every score, served as one pyfunc.

The same artifact answers in BentoML and `mlflow models serve`: feature rows in (the columns of
`features build`), scores out. Which candidate answers each target (`training.candidates`)
was chosen on the validation cutoff.

Interval columns: `spend_p10`/`spend_p50`/`spend_p90` and `clv_p10`/`clv_p50`/`clv_p90` are
the lower end, median and upper end of an interval whose quantile levels were calibrated on
the validation cutoff to hold `interval_target` (80% by default) of customers; the levels
used are `interval_levels`, so the ends are not always the 10th and 90th percentiles.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import xgboost as xgb

from training.candidates import Target, candidate, churn_contributions, prepare_reasons
from training.components import Components, component_features, fit_components
from training.data import SEASON, add_season
from training.models import (
    ChurnClassifier,
    PurchasesRegressor,
    RankBlend,
    RFMLogistic,
    SpendRegressor,
    clv,
)
from training.reasons import explain_joined

SCORE_COLUMNS: tuple[str, ...] = (
    "customer_id", "as_of", "horizon_days", "churn_probability", "p_alive",
    "expected_purchases", "expected_spend", "spend_p10", "spend_p50", "spend_p90",
    "clv", "clv_p10", "clv_p50", "clv_p90", "value_at_risk", "reasons_raising",
    "reasons_lowering", "churn_model", "purchases_model", "spend_model",
)
SMALL_BATCH = 10_000  # rows below which XGBoost predicts on one thread
MIN_REFIT = 500  # population rows below which the registered components are kept


@dataclass(kw_only=True)
class CustomerScorer:
    """Fitted models plus the candidates chosen on the validation cutoff."""

    features: list[str]
    components: Components
    churn: ChurnClassifier
    purchases: PurchasesRegressor
    spend: SpendRegressor
    rfm: RFMLogistic
    horizon_days: int
    blend: RankBlend | None = None  # fitted when selection chose the blend
    churn_choice: str = "xgboost"
    purchases_choice: str = "xgboost"
    spend_choice: str = "xgboost"
    interval_levels: tuple[float, float] = (0.10, 0.90)
    clv_horizon_days: int = 365
    discount_rate: float = 0.10
    draws: int = 200
    metadata: dict[str, object] = field(default_factory=dict)

    def with_components(self, components: Components) -> CustomerScorer:
        """The same models with BTYD components fitted elsewhere (at the as_of being scored)."""
        return replace(self, components=components)

    def for_population(self, frame: pd.DataFrame) -> CustomerScorer:
        """This scorer for a whole snapshot: components refitted on its population when its
        as_of is not the data end the model was registered at (a feature refresh after training).

        Kept as registered for a mixed or unknown as_of, or fewer than MIN_REFIT customers.
        """
        if frame.empty or any(c not in frame.columns for c in self.input_columns):
            return self  # scoring names what is missing
        as_ofs = pd.to_datetime(frame["as_of"], errors="coerce").unique()
        if len(as_ofs) != 1 or pd.isna(as_ofs[0]) or (
                as_ofs[0].date().isoformat() == self.metadata.get("data_end")):
            return self
        rows = frame[frame["in_population"]] if "in_population" in frame.columns else frame
        if len(rows) < MIN_REFIT:
            return self
        return self.with_components(fit_components(rows.reset_index(drop=True)))

    @property
    def input_columns(self) -> list[str]:
        """Columns a caller sends: the feature table's, as `features build` writes them."""
        return ["customer_id", "as_of", *(f for f in self.features if f not in SEASON)]

    def stacked(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Feature rows plus season (from as_of; the data end when absent) and BTYD columns."""
        missing = [c for c in self.input_columns if c not in frame.columns and c != "as_of"]
        if missing:
            raise ValueError(f"feature rows: missing columns {missing}")
        if "as_of" not in frame.columns:
            frame = frame.assign(as_of=self.metadata.get("data_end"))
        frame = add_season(frame)
        return component_features(frame, self.components, self.horizon_days)

    def churn_probability(self, x: pd.DataFrame) -> np.ndarray:
        """P(no purchase in the horizon) of stacked rows, from the chosen churn candidate."""
        return candidate(Target.CHURN, self.churn_choice).predict(self, x)

    def expected_purchases(self, x: pd.DataFrame) -> np.ndarray:
        """Expected purchase days in the horizon of stacked rows."""
        return candidate(Target.PURCHASES, self.purchases_choice).predict(self, x)

    def expected_spend(self, x: pd.DataFrame) -> np.ndarray:
        """Expected net spend in the horizon of stacked rows."""
        return candidate(Target.SPEND, self.spend_choice).predict(self, x)

    def score(self, frame: pd.DataFrame, *, reasons: bool = True) -> pd.DataFrame:
        """Every score for each feature row (see SCORE_COLUMNS).

        Every score is row by row: the value simulation draws each customer's futures from
        its own key (`components.customer_keys`), so a row gets the same answer alone, in any
        batch, chunk or order.
        """
        # Waking XGBoost's thread pool costs more than a small batch's trees on a busy machine.
        threads = 1 if len(frame) < SMALL_BATCH else xgb.get_config()["nthread"]
        with xgb.config_context(nthread=threads):
            return self._score(frame.reset_index(drop=True), reasons)

    def prepare(self, *, reasons: bool = True) -> None:
        """Build what scoring many big batches reads (the boosters' compiled forests, the
        tables behind the reasons): worth it for a population of many chunks, where it is
        built beside the threads scoring the first ones."""
        for model in (self.purchases, self.spend, self.churn):
            model.prepare_predictions()
        if reasons:
            prepare_reasons(self, self.churn_choice)

    def _score(self, frame: pd.DataFrame, reasons: bool) -> pd.DataFrame:
        x = self.stacked(frame)
        churn = self.churn_probability(x)
        spend = self.expected_spend(x)
        # One simulation serves both horizons (the CLV horizon extends the same futures); only
        # its mean and quantiles per row are kept.
        sims_h, sims_c = self.components.simulate_summaries(
            x, (self.horizon_days, self.clv_horizon_days),
            clv.interval_levels(self.interval_levels), draws=self.draws)
        interval = clv.summary_quantiles(sims_h, spend)
        sim_h = sims_h.mean
        adjust = np.clip(np.divide(spend, sim_h, out=np.ones_like(spend), where=sim_h > 0),
                         0.2, 5.0)
        disc = clv.discount_factor(self.clv_horizon_days, self.discount_rate)
        clv_mean = sims_c.mean * adjust
        value = clv.summary_quantiles(sims_c, clv_mean) * disc
        clv_mean = clv_mean * disc
        out = pd.DataFrame({
            "customer_id": x["customer_id"].astype(str),
            "as_of": _text(x["as_of"]) if "as_of" in x else "",
            "horizon_days": self.horizon_days,
            "churn_probability": churn,
            "p_alive": x["bg_p_alive"].to_numpy(),
            "expected_purchases": self.expected_purchases(x),
            "expected_spend": spend,
            "spend_p10": interval["lower"], "spend_p50": interval["median"],
            "spend_p90": interval["upper"],
            "clv": clv_mean, "clv_p10": value["lower"], "clv_p50": value["median"],
            "clv_p90": value["upper"],
            "value_at_risk": churn * clv_mean,
        })
        if reasons:
            raising, lowering = explain_joined(
                churn_contributions(self, self.churn_choice, x), x)
            out["reasons_raising"] = raising
            out["reasons_lowering"] = lowering
        else:
            out["reasons_raising"] = out["reasons_lowering"] = ""
        out["churn_model"] = self.churn_choice
        out["purchases_model"] = self.purchases_choice
        out["spend_model"] = self.spend_choice
        return out[list(SCORE_COLUMNS)]


def _text(column: pd.Series) -> pd.Series:
    """`column.astype(str)`, each distinct value written once (a snapshot's rows share one or
    a few dates: the per-row `str` of date objects is the cost)."""
    if column.dtype != object or pd.api.types.infer_dtype(column, skipna=False) != "date":
        return column.astype(str)  # only dates are sure to equal no value of another type
    codes, distinct = pd.factorize(column)
    texts = np.asarray([str(v) for v in distinct], dtype=object)
    return pd.Series(texts[codes], index=column.index).astype(str)
