"""The model library: estimators and maths with no pipeline, registry or column conventions.

Depends on numpy, pandas, scipy, scikit-learn and xgboost only (and matplotlib for the BTYD
plots of `training.models.plots`, a submodule so that importing the models does not load it).
Every estimator follows scikit-learn's contract (keyword-only hyper-parameters, `fit` returns
self, learned state ends in `_`, a clear error before `fit`). The training pipeline
(`training`) decides which columns they see; the registry and the service never reach in here
except through the pipeline.

- BTYD: `BetaGeoModel` (BG/NBD), `ParetoNBDModel`, `GammaGammaModel`;
- boosters: `ChurnClassifier`, `PurchasesRegressor`, `SpendRegressor` (over `BoostedModel`);
- baselines: `RFMLogistic`; the rank blend of two models' scores: `RankBlend`;
- uplift learners: `TLearner`, `XLearner`, `ClassTransformation` (over `UpliftLearner`);
- products: `ItemRecommender`, `PopularityRecommender`;
- value maths: `clv` (simulated spend, intervals, discounting);
- plots: `training.models.plots` (frequency/recency and P(alive) matrices, period
  transactions; each takes `ax=` and returns the Axes).
"""

from training.models import clv
from training.models.baselines import RFMLogistic
from training.models.blend import RankBlend
from training.models.boosted import BoostedModel
from training.models.btyd import BaseModel as BTYDModel
from training.models.btyd import BetaGeoModel, GammaGammaModel, ParetoNBDModel
from training.models.churn import ChurnClassifier
from training.models.errors import ModelInputError
from training.models.purchases import PurchasesRegressor
from training.models.recommender import ItemRecommender, PopularityRecommender
from training.models.spend import SpendRegressor
from training.models.uplift import (
    CONTROL,
    ClassTransformation,
    TLearner,
    UpliftInputError,
    UpliftLearner,
    XLearner,
)

__all__ = [
    "CONTROL",
    "BTYDModel",
    "BetaGeoModel",
    "BoostedModel",
    "ChurnClassifier",
    "ClassTransformation",
    "GammaGammaModel",
    "ItemRecommender",
    "ModelInputError",
    "ParetoNBDModel",
    "PopularityRecommender",
    "PurchasesRegressor",
    "RFMLogistic",
    "RankBlend",
    "SpendRegressor",
    "TLearner",
    "UpliftInputError",
    "UpliftLearner",
    "XLearner",
    "clv",
]
