"""Uplift learners for randomised campaigns: T-learner, X-learner, class transformation."""

from training.models.uplift.base import CONTROL, UpliftInputError, UpliftLearner, check_features
from training.models.uplift.class_transformation import ClassTransformation
from training.models.uplift.tlearner import TLearner
from training.models.uplift.xlearner import XLearner

__all__ = [
    "CONTROL",
    "ClassTransformation",
    "TLearner",
    "UpliftInputError",
    "UpliftLearner",
    "XLearner",
    "check_features",
]
