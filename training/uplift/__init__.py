"""Uplift learners from randomised campaign logs: T-learner, X-learner, class transformation,
their evaluation (`training.uplift.evaluate`) and plots (`training.uplift.plots`)."""

from training.uplift.base import CONTROL, UpliftInputError, UpliftLearner
from training.uplift.class_transformation import ClassTransformation
from training.uplift.data import CampaignFit, arm_labels, fit_from_campaign_log, log_features
from training.uplift.tlearner import TLearner
from training.uplift.xlearner import XLearner

__all__ = [
    "CONTROL",
    "CampaignFit",
    "ClassTransformation",
    "TLearner",
    "UpliftInputError",
    "UpliftLearner",
    "XLearner",
    "arm_labels",
    "fit_from_campaign_log",
    "log_features",
]
