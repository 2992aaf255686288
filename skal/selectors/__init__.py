"""Selectors: strategies that choose which pool samples to label next."""

from .badge import BADGE
from .bald import BALD
from .base import BaseSelector, LabeledData, ScoreSelector, TrainingNeeds
from .batch import BatchRule, ClusterBatch, StochasticBatch, TopK
from .baselines import Entropy, LeastConfidence, Margin, Random
from .coreset import CoreSet
from .disal import DISAL
from .isal import ISAL
from .ll4al import LL4AL
from .tidal import TiDAL

__all__ = [
    "BaseSelector",
    "ScoreSelector",
    "TrainingNeeds",
    "LabeledData",
    "DISAL",
    "ISAL",
    "CoreSet",
    "BALD",
    "BADGE",
    "TiDAL",
    "LL4AL",
    "Random",
    "Entropy",
    "Margin",
    "LeastConfidence",
    "BatchRule",
    "TopK",
    "StochasticBatch",
    "ClusterBatch",
]
