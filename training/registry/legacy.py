"""Loading models registered before the estimators moved into the model library.

A pickle names each class by the module that defined it when it was saved. Models registered
with the old module layout name `training.btyd.bgnbd`, `training.churn`,
`training.uplift.xlearner` and so on; those modules now live under `training.models`.
`load_artifact` makes every old module name in `MOVED_MODULES` resolve to the module that holds
its classes today, then loads, so such a model loads and scores as it did.

Supported: a `customer-scorer` or `uplift` version, or a run's item recommender, pickled with
the old module layout, whose classes kept their names and the meaning of their state. The
pyfunc wrappers kept their pickled path (`training.registry.ScorerModel`,
`training.registry.UpliftPyfunc`); the pipeline's own classes (`training.scorer`,
`training.components`, `training.uplift.data`) did not move. The example in
`tests/fixtures/legacy_models` was saved with the old layout and is loaded by the tests.

Examples
--------
>>> MOVED_MODULES["training.btyd.bgnbd"]
'training.models.btyd.bgnbd'
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import joblib

# Old module name -> the module that holds its classes now.
MOVED_MODULES: Mapping[str, str] = MappingProxyType({
    "training.baselines": "training.models.baselines",
    "training.boosted": "training.models.boosted",
    "training.btyd": "training.models.btyd",
    "training.btyd.base": "training.models.btyd.base",
    "training.btyd.bgnbd": "training.models.btyd.bgnbd",
    "training.btyd.gammagamma": "training.models.btyd.gammagamma",
    "training.btyd.paretonbd": "training.models.btyd.paretonbd",
    "training.churn": "training.models.churn",
    "training.clv": "training.models.clv",
    "training.purchases": "training.models.purchases",
    "training.recommender": "training.models.recommender",
    "training.spend": "training.models.spend",
    "training.uplift.base": "training.models.uplift.base",
    "training.uplift.class_transformation": "training.models.uplift.class_transformation",
    "training.uplift.tlearner": "training.models.uplift.tlearner",
    "training.uplift.xlearner": "training.models.uplift.xlearner",
})


def install_aliases() -> None:
    """Register every old module name in `sys.modules` as the module that replaced it.

    An old name that already resolves to a module is left as it is.
    """
    for old, new in MOVED_MODULES.items():
        if old not in sys.modules:
            sys.modules[old] = importlib.import_module(new)


def load_artifact(path: str | Path) -> Any:
    """`joblib.load(path)`, with the old module names resolving (see the module docstring)."""
    install_aliases()
    return joblib.load(path)
