"""Selectors: strategies that choose which pool samples to label next."""

from .base import BaseSelector, ScoreSelector, TrainingNeeds
from .baselines import Entropy, LeastConfidence, Margin, Random
from .disal import DISAL
from .ll4al import LL4AL
from .tidal import TiDAL

__all__ = [
    "BaseSelector",
    "ScoreSelector",
    "TrainingNeeds",
    "DISAL",
    "TiDAL",
    "LL4AL",
    "Random",
    "Entropy",
    "Margin",
    "LeastConfidence",
]
