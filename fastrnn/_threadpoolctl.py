"""fastrnn's thread pool as a threadpoolctl library controller.

threadpoolctl (what scikit-learn, joblib and Dask users reach for to stop thread pools
from oversubscribing the cores) finds pools by the shared libraries mapped into the
process; a library it does not know registers a ``LibController`` subclass with
``threadpoolctl.register``. This module is that subclass. It imports threadpoolctl, so
fastrnn itself never imports it: fastrnn/_threads.py registers the controller when
threadpoolctl is (or gets) imported, and ``fastrnn.register_threadpoolctl()`` does it by
hand.

The controller's library is fastrnn's C core (fastrnn/_core*.so); its thread count is
``fastrnn.get_num_threads()``. Its user_api is "openmp", because that is what the pool
is (the core's OpenMP team, each thread on single-threaded BLAS): limiting "openmp"
limits fastrnn too. internal_api "fastrnn" names it alone.
"""
import os

import threadpoolctl
from threadpoolctl import LibController

from . import __version__, _core, _threads

__all__ = ["FastrnnController", "register"]

_CORE_PATH = os.path.realpath(_core.__file__)


class _NotFastrnn:
    """Stands in for the handle of a library that only shares the core's file name."""


class FastrnnController(LibController):
    user_api = "openmp"
    internal_api = "fastrnn"
    # threadpoolctl matches file names only, and other packages ship a `_core` extension
    # too (scipy does): the check below keeps only fastrnn's own file.
    filename_prefixes = (os.path.basename(_CORE_PATH).split(".")[0] + ".",)
    check_symbols = ("PyInit__core",)

    def set_additional_attributes(self):
        if os.path.realpath(self.filepath) != _CORE_PATH:
            # threadpoolctl drops a candidate whose handle lacks every check_symbols
            self.dynlib = _NotFastrnn()

    def get_num_threads(self):
        return _threads.get_num_threads()

    def set_num_threads(self, num_threads):
        _threads.set_num_threads(min(max(1, int(num_threads)), _threads.MAX_THREADS))

    def get_version(self):
        return __version__


_registered_with = None   # the threadpoolctl module FastrnnController is registered with


def register():
    """Register FastrnnController with threadpoolctl, once. False when this threadpoolctl
    has no ``register`` (before 3.2: it cannot learn of other libraries)."""
    global _registered_with
    if _registered_with is threadpoolctl:
        return True
    if not hasattr(threadpoolctl, "register"):
        return False
    threadpoolctl.register(FastrnnController)
    _registered_with = threadpoolctl
    return True
