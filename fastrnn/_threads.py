"""The thread count every fastrnn call uses: the C core's OpenMP threads (over the
batch, and over fixed blocks of the large GEMMs, each on single-threaded BLAS).

threadpoolctl sees and sets it too (``threadpool_info()`` lists fastrnn,
``threadpool_limits(1)`` holds it to one thread), without fastrnn importing
threadpoolctl: when threadpoolctl is already imported, fastrnn registers its controller
at import; otherwise a one-shot import hook registers it right after threadpoolctl's
own import, whoever imports it (scikit-learn, joblib or the user) and whenever.
``register_threadpoolctl()`` does the same by hand.
"""
import sys

from . import _core

__all__ = ["get_num_threads", "set_num_threads", "register_threadpoolctl"]

MAX_THREADS = 1024
_num_threads = max(1, _core.max_threads())


def set_num_threads(n):
    """Use `n` threads in every following call. Default: what OpenMP would use
    (OMP_NUM_THREADS, else the number of cores). A build without OpenMP keeps the
    setting but runs on the calling thread."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, (int,)) and not hasattr(n, "__index__"):
        raise TypeError(f"n must be an integer, got {type(n).__name__}")
    n = int(n)
    if n < 1 or n > MAX_THREADS:
        raise ValueError(f"n must lie in [1, {MAX_THREADS}], got {n}")
    # without OpenMP the setting is kept (and reported) but the core runs on one thread
    _num_threads = n


def get_num_threads():
    """The thread count fastrnn calls use."""
    return _num_threads


# ---------------------------------------------------------------- threadpoolctl
def register_threadpoolctl():
    """Register fastrnn's thread pool with threadpoolctl (importing it), so that
    ``threadpoolctl.threadpool_info()`` lists it (user_api 'openmp', internal_api
    'fastrnn') and ``threadpool_limits`` sets ``get_num_threads()``. fastrnn does this
    by itself whenever threadpoolctl gets imported; call it only if that was prevented.
    Returns False when threadpoolctl is too old to take other libraries (before 3.2)."""
    from ._threadpoolctl import register
    return register()


def _register_quietly():
    try:
        register_threadpoolctl()
    except Exception as e:  # never break the import of threadpoolctl itself
        import warnings
        warnings.warn(f"fastrnn could not register its thread pool with threadpoolctl: {e!r}",
                      RuntimeWarning, stacklevel=2)


class _RegisterAfterImport:
    """A sys.meta_path entry that waits for `import threadpoolctl`: it finds the module
    with the other finders, lets its loader run it, then registers fastrnn and removes
    itself. Any other import is passed on at the cost of one comparison."""

    def find_spec(self, name, path=None, target=None):
        if name != "threadpoolctl":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None   # not installed: keep waiting, harmlessly
        loader = spec.loader
        run = getattr(loader, "exec_module", None)
        if run is None:
            return None

        def exec_module(module):
            try:
                run(module)
            finally:
                vars(loader).pop("exec_module", None)   # the loader's own method again
            _remove_hook()
            _register_quietly()

        try:
            loader.exec_module = exec_module   # on this loader object only, for this import
        except AttributeError:                 # a loader without instance attributes
            return None
        return spec


def _remove_hook():
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _RegisterAfterImport)]


def _register_when_threadpoolctl_is_imported():
    if "threadpoolctl" in sys.modules:
        _register_quietly()
    elif not any(isinstance(f, _RegisterAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport())
