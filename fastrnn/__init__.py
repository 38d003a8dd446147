"""fastrnn: LSTM, GRU and RNN for the CPU, in C with OpenMP, on numpy and scipy alone.

    from fastrnn import LSTMClassifier
    LSTMClassifier().fit(X, y).predict(X)

fastrnn.show_config() tells how this copy was built and how it runs (threads included:
threadpoolctl's threadpool_limits sets them too); fastrnn.interop
moves weights from and to PyTorch and Keras; fastrnn.datasets makes synthetic data.
"""
__version__ = "0.2.0"

from ._threads import get_num_threads, register_threadpoolctl, set_num_threads
from .layers import GRU, LSTM, RNN
from .estimators import (GRUClassifier, GRURegressor, GRUSequenceRegressor, GRUTagger,
                         LSTMClassifier, LSTMRegressor, LSTMSequenceRegressor, LSTMTagger,
                         RNNClassifier, RNNRegressor, RNNSequenceRegressor, RNNTagger, load)
from ._config import get_config, show_config
from ._threads import _register_when_threadpoolctl_is_imported

_register_when_threadpoolctl_is_imported()   # threadpoolctl sees fastrnn's pool
del _register_when_threadpoolctl_is_imported

__all__ = ["LSTM", "GRU", "RNN", "LSTMClassifier", "LSTMRegressor", "GRUClassifier",
           "GRURegressor", "RNNClassifier", "RNNRegressor", "LSTMTagger", "GRUTagger",
           "RNNTagger", "LSTMSequenceRegressor", "GRUSequenceRegressor",
           "RNNSequenceRegressor", "load", "set_num_threads",
           "get_num_threads", "register_threadpoolctl", "show_config", "get_config",
           "__version__"]
