"""MLflow tracking and registry: log training runs, register `customer-scorer` and `uplift`,
promote, roll back, and load what serving needs.

Embedded by default: a SQLite store and local artifacts under `mlruns/` of the state home
(`features.home`). Any MLFLOW_TRACKING_URI works instead, e.g. a team's `mlflow server` backed
by PostgreSQL.

- `names`: the registered models, aliases and version tags (`RegisteredModel`, `Alias`, `Tag`);
- `tracking`: `configure`, one run per training job (`log_training`, `log_uplift`, ...);
- `pyfunc`: the pyfunc wrappers `ScorerModel` and `UpliftPyfunc` the registry stores;
- `promotion`: the gates per model, `promote`, `rollback`, `list_versions`;
- `versions`: alias look-ups and loading a version (`aliased_version`, `load_scorer`, ...);
- `legacy`: loading models pickled before the estimators moved to `training.models`.

Registered models pickle their wrapper as `training.registry.ScorerModel` and
`training.registry.UpliftPyfunc`: both names must stay importable from here.
"""

from features.lazy import lazy_exports
from training.registry.names import (
    EXPERIMENT,
    MODEL_NAME,
    RECOMMENDER_ARTIFACT,
    VS,
    Alias,
    RegisteredModel,
    Tag,
)

# Everything but the names loads MLflow: imported on first use, so that reading a name (the
# store-backed service, the CLI) does not import MLflow.
_LAZY = {
    **dict.fromkeys(("MOVED_MODULES", "install_aliases", "load_artifact"),
                    "training.registry.legacy"),
    **dict.fromkeys(("GATES", "Gate", "compare", "head_to_head", "list_versions", "promote",
                     "rollback"), "training.registry.promotion"),
    **dict.fromkeys(("ScorerModel", "UpliftPyfunc", "requirements"),
                    "training.registry.pyfunc"),
    **dict.fromkeys(("configure", "log_model", "log_recommender", "log_stage_seconds",
                     "log_training", "log_uplift", "model_card"), "training.registry.tracking"),
    **dict.fromkeys(("aliased_version", "load_champion", "load_recommender", "load_scorer",
                     "load_uplift"), "training.registry.versions"),
}
_, __getattr__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "EXPERIMENT",
    "GATES",
    "MODEL_NAME",
    "MOVED_MODULES",
    "RECOMMENDER_ARTIFACT",
    "VS",
    "Alias",
    "Gate",
    "RegisteredModel",
    "ScorerModel",
    "Tag",
    "UpliftPyfunc",
    "aliased_version",
    "compare",
    "configure",
    "head_to_head",
    "install_aliases",
    "list_versions",
    "load_artifact",
    "load_champion",
    "load_recommender",
    "load_scorer",
    "load_uplift",
    "log_model",
    "log_recommender",
    "log_stage_seconds",
    "log_training",
    "log_uplift",
    "model_card",
    "promote",
    "requirements",
    "rollback",
]
