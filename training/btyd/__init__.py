"""BTYD models: BG/NBD, Pareto/NBD and Gamma-Gamma, fitted by vectorised maximum likelihood."""

from training.btyd.base import BaseModel
from training.btyd.bgnbd import BetaGeoModel
from training.btyd.gammagamma import GammaGammaModel
from training.btyd.paretonbd import ParetoNBDModel

__all__ = ["BaseModel", "BetaGeoModel", "GammaGammaModel", "ParetoNBDModel"]
