"""skal: scikit-learn-compatible deep active learning."""

from .learner import ActiveLearner
from .net import ActiveNet

__version__ = "0.1.0"

__all__ = ["ActiveLearner", "ActiveNet", "__version__"]
