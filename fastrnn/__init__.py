"""fastrnn: LSTM, GRU and RNN layers for the CPU, in C with OpenMP, on numpy and scipy."""
from ._threads import get_num_threads, set_num_threads
from .layers import GRU, LSTM, RNN

__version__ = "0.1.0"
__all__ = ["LSTM", "GRU", "RNN", "set_num_threads", "get_num_threads", "__version__"]
