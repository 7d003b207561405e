"""Learning from customer history: the training pipeline around the model library.

- `training.models`: the estimators and value maths (no MLflow, no column conventions);
- `training.data`: cutoffs that keep every number out of time, and their feature frames;
- `training.components`: BTYD fits per cutoff and their stacking columns;
- `training.candidates`: every model the scorer can serve or is graded against;
- `training.train`: the job (fit, select on validation, refit, evaluate on test);
- `training.scorer`: `CustomerScorer`, feature rows in, every score out;
- `training.evaluate` / `training.plots` / `training.report`: metrics, grades and their plots;
- `training.reasons`: TreeSHAP contributions in words;
- `training.registry`: MLflow runs, the registered pyfunc models, promotion and roll back;
- `training.uplift`: uplift from a campaign log;
- `training.cli`: the `train` and `models` commands.

The public names below load on first use, so `import training.models` does not import MLflow.
"""

from features.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "CustomerScorer": "training.scorer",
    "Metric": "training.evaluate",
    "Target": "training.candidates",
    "TrainConfig": "training.train",
    "TrainResult": "training.train",
    "configure": "training.registry",
    "figures": "training.report",
    "grade_report": "training.evaluate",
    "list_versions": "training.registry",
    "load_champion": "training.registry",
    "log_training": "training.registry",
    "plan_cutoffs": "training.data",
    "promote": "training.registry",
    "rollback": "training.registry",
    "train_uplift": "training.uplift.job",
})
