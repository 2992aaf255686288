"""skal: scikit-learn-compatible deep active learning."""

from ._bookkeeping import UNLABELED
from ._persistence import get_untrusted_types
from .learner import ActiveLearner
from .net import ActiveNet

__version__ = "0.3.0"

__all__ = ["ActiveLearner", "ActiveNet", "UNLABELED", "get_untrusted_types", "__version__"]
