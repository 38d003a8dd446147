"""fastrnn: LSTM, GRU and RNN for the CPU, in C with OpenMP, on numpy and scipy alone.

    from fastrnn import LSTMClassifier
    LSTMClassifier().fit(X, y).predict(X)
"""
__version__ = "0.1.0"

from ._threads import get_num_threads, set_num_threads
from .layers import GRU, LSTM, RNN
from .estimators import (GRUClassifier, GRURegressor, LSTMClassifier, LSTMRegressor,
                         RNNClassifier, RNNRegressor, load)

__all__ = ["LSTM", "GRU", "RNN", "LSTMClassifier", "LSTMRegressor", "GRUClassifier",
           "GRURegressor", "RNNClassifier", "RNNRegressor", "load", "set_num_threads",
           "get_num_threads", "__version__"]
