"""The thread count every fastrnn call uses: the C core's OpenMP threads (over the
batch, and over fixed blocks of the large GEMMs, each on single-threaded BLAS)."""
from . import _core

_num_threads = max(1, _core.max_threads())


def set_num_threads(n):
    """Use `n` threads in every following call. Default: what OpenMP would use
    (OMP_NUM_THREADS, else the number of cores). A build without OpenMP keeps the
    setting but runs on the calling thread."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, (int,)) and not hasattr(n, "__index__"):
        raise TypeError(f"n must be an integer, got {type(n).__name__}")
    n = int(n)
    if n < 1 or n > 1024:
        raise ValueError(f"n must lie in [1, 1024], got {n}")
    # without OpenMP the setting is kept (and reported) but the core runs on one thread
    _num_threads = n


def get_num_threads():
    """The thread count fastrnn calls use."""
    return _num_threads
