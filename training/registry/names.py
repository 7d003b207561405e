"""What the registry holds, by name: the registered models, their aliases and version tags.

These names are stored in MLflow, so a name changed here no longer finds what earlier runs
wrote.

Examples
--------
>>> f"models:/{RegisteredModel.SCORER}@{Alias.CHAMPION}"
'models:/customer-scorer@champion'
>>> f"{VS}{Tag.CHURN_ROC_AUC}"
'vs_champion_churn_roc_auc'
"""

from __future__ import annotations

from enum import StrEnum

EXPERIMENT = "retention"  # the MLflow experiment every training run is logged to
# Where a customer-scorer run keeps its item recommender, among the run's artifacts.
RECOMMENDER_ARTIFACT = "recommender/recommender.joblib"


class RegisteredModel(StrEnum):
    """The registered models, one pyfunc each."""

    SCORER = "customer-scorer"  # feature rows in, every customer score out
    UPLIFT = "uplift"  # feature rows in, one estimated uplift per covered offer out


MODEL_NAME = RegisteredModel.SCORER  # the model the service answers with (its /metadata)


class Alias(StrEnum):
    """The aliases a registered model's versions carry."""

    CHAMPION = "champion"  # the version serving loads
    CHALLENGER = "challenger"  # the latest registered version, the candidate for promotion


class Tag(StrEnum):
    """The tags a registered version carries."""

    # customer-scorer: the run's test-cutoff metrics and where that cutoff lies
    CHURN_ROC_AUC = "churn_roc_auc"
    PURCHASES_MAE = "purchases_mae"
    VALUE_GINI = "value_gini"
    TEST_AS_OF = "test_as_of"
    GRADE = "grade"
    # uplift: the held-out metrics of its first offer, the offers covered and the outcome
    QINI_AUC = "qini_auc"
    UPLIFT_AT_30 = "uplift_at_30"
    OFFERS = "offers"
    OUTCOME = "outcome"
    # written by promote and rollback
    PREVIOUS_CHAMPION = "previous_champion"
    PROMOTED_FORCED = "promoted_forced"
    RESTORED_FROM = "restored_from"


# Prefix of the tags holding the champion's gate metrics on a challenger's test cutoff
# (`vs_champion_version` names that champion).
VS = "vs_champion_"
