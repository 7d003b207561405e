"""BTYD models: BG/NBD, Pareto/NBD and Gamma-Gamma, fitted by vectorised maximum likelihood."""

from training.models.btyd.base import BaseModel
from training.models.btyd.bgnbd import BetaGeoModel
from training.models.btyd.gammagamma import GammaGammaModel
from training.models.btyd.paretonbd import ParetoNBDModel

__all__ = ["BaseModel", "BetaGeoModel", "GammaGammaModel", "ParetoNBDModel"]
