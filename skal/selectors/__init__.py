"""Selectors: strategies that choose which pool samples to label next."""

from .base import BaseSelector, ScoreSelector, TrainingNeeds
from .baselines import Entropy, LeastConfidence, Margin, Random
from .disal import DISAL

__all__ = [
    "BaseSelector",
    "ScoreSelector",
    "TrainingNeeds",
    "DISAL",
    "Random",
    "Entropy",
    "Margin",
    "LeastConfidence",
]
