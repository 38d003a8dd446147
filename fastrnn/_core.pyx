# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""_core — the one door between Python and the C recurrences in src_c/.

Design (as sklearn/_loss): the C functions are pure, nogil and take explicit sizes and
an explicit thread count; this module only
  * checks every buffer it hands over (dtype, C order, writability, size), so the C core
    can never read or write out of bounds whatever Python passes;
  * passes scipy's Fortran sgemm/dgemm as function pointers (no other BLAS is linked)
    and OpenBLAS' per-thread thread-count setter, found with ctypes;
  * releases the GIL while C runs.
Shapes and user-facing messages are checked earlier, in fastrnn/layers.py.
"""
from scipy.linalg.cython_blas cimport sgemm, dgemm
from libc.stdint cimport uintptr_t
from libc.stdlib cimport malloc, free
cimport numpy as cnp
import ctypes
import numpy as np

cnp.import_array()

cdef extern from "kernels.h" nogil:
    int fr_kernel_available()
    int fr_all_finite_f32(const float *x, size_t n)
    int fr_all_finite_f64(const double *x, size_t n)

cdef extern from "fastrnn.h" nogil:
    ctypedef void (*fr_sgemm_t)(char *ta, char *tb, int *m, int *n, int *k, float *alpha,
                                float *a, int *lda, float *b, int *ldb, float *beta,
                                float *c, int *ldc)
    ctypedef void (*fr_dgemm_t)(char *ta, char *tb, int *m, int *n, int *k, double *alpha,
                                double *a, int *lda, double *b, int *ldb, double *beta,
                                double *c, int *ldc)
    ctypedef struct fr_dims:
        int cell, batch, steps, input, hidden, reverse, n_threads, chunk, ld, batch_first
    int fr_gates(int cell)
    int fr_store_width(int cell, int hidden)
    size_t fr_forward_workspace(const fr_dims *d)
    size_t fr_backward_workspace(const fr_dims *d)
    int fr_forward_f32(const fr_dims *d, float *out, float *h_n, float *c_n,
                       float *h_all, float *c_all, float *store,
                       const float *x, const int *lengths, const float *h0, const float *c0,
                       const float *w_ih, const float *w_hh, const float *b_ih,
                       const float *b_hh, float *ws, fr_sgemm_t gemm)
    size_t fr_weight_cache_size(const fr_dims *d)
    int fr_splits_as_one_chunk(const fr_dims *d)
    int fr_forward_cached_f32(const fr_dims *d, float *out, float *h_n, float *c_n,
                              const float *x, const int *lengths, const float *h0,
                              const float *c0, const float *w_ih, const float *w_hh,
                              const float *b_ih, const float *b_hh, float *ws, float *cache,
                              fr_sgemm_t gemm)
    int fr_forward_f64(const fr_dims *d, double *out, double *h_n, double *c_n,
                       double *h_all, double *c_all, double *store,
                       const double *x, const int *lengths, const double *h0,
                       const double *c0, const double *w_ih, const double *w_hh,
                       const double *b_ih, const double *b_hh, double *ws, fr_dgemm_t gemm)
    int fr_backward_f32(const fr_dims *d, float *dx, float *dw_ih, float *dw_hh,
                        float *db_ih, float *db_hh, float *dh0, float *dc0,
                        const float *d_out, const float *d_h_n, const float *d_c_n,
                        const float *h_all, const float *c_all, float *store,
                        const float *x, const int *lengths,
                        const float *w_ih, const float *w_hh,
                        int accumulate_dx, float *ws, fr_sgemm_t gemm)
    int fr_backward_f64(const fr_dims *d, double *dx, double *dw_ih, double *dw_hh,
                        double *db_ih, double *db_hh, double *dh0, double *dc0,
                        const double *d_out, const double *d_h_n, const double *d_c_n,
                        const double *h_all, const double *c_all, double *store,
                        const double *x, const int *lengths,
                        const double *w_ih, const double *w_hh,
                        int accumulate_dx, double *ws, fr_dgemm_t gemm)
    int fr_openmp_enabled()
    int fr_max_threads()
    int fr_last_threads()
    int fr_threads_used_max()
    void fr_threads_used_reset()
    ctypedef struct fr_stream_dims:
        int cell, layers, batch, input, hidden, outputs, chunk, scaled, vocab
    size_t fr_stream_workspace(const fr_stream_dims *d)
    int fr_stream_init_f32(const fr_stream_dims *d, float *ws, const float *const *w_ih,
                           const float *const *w_hh, const float *const *b_ih,
                           const float *const *b_hh, const float *head_w,
                           const float *head_b, const float *mean, const float *scale)
    int fr_stream_init_f64(const fr_stream_dims *d, double *ws, const double *const *w_ih,
                           const double *const *w_hh, const double *const *b_ih,
                           const double *const *b_hh, const double *head_w,
                           const double *head_b, const double *mean, const double *scale)
    int fr_stream_state_f32(const fr_stream_dims *d, float *ws, float *h, float *c, int write)
    int fr_stream_state_f64(const fr_stream_dims *d, double *ws, double *h, double *c,
                            int write)
    int fr_stream_step_f32(const fr_stream_dims *d, float *ws, int K, const float *x,
                           const long long *ids, const float *emb, const unsigned char *known,
                           int every, float *out, fr_sgemm_t gemm)
    int fr_stream_step_f64(const fr_stream_dims *d, double *ws, int K, const double *x,
                           const long long *ids, const double *emb,
                           const unsigned char *known, int every, double *out,
                           fr_dgemm_t gemm)
    ctypedef struct fr_cell_desc:
        const char *name
        int n_gates
        const char *gates
        const char *states
        const char *stored
        int store_width
    const fr_cell_desc *fr_cell_info(int cell)
    size_t fr_dense_workspace(int n, int k, int m)
    int fr_dense_forward_f32(int n, int k, int m, int n_threads, float *y, const float *x,
                             const float *w, const float *b, float *ws, fr_sgemm_t gemm)
    int fr_dense_forward_f64(int n, int k, int m, int n_threads, double *y, const double *x,
                             const double *w, const double *b, double *ws, fr_dgemm_t gemm)
    int fr_dense_backward_f32(int n, int k, int m, int n_threads, float *dx, float *dw,
                              float *db, const float *dy, const float *x, const float *w,
                              float *ws, fr_sgemm_t gemm)
    int fr_dense_backward_f64(int n, int k, int m, int n_threads, double *dx, double *dw,
                              double *db, const double *dy, const double *x, const double *w,
                              double *ws, fr_dgemm_t gemm)
    size_t fr_softmax_xent_workspace(int n)
    int fr_softmax_xent_f32(int n, int C, int n_threads, float *dz, double *loss,
                            const float *z, const int *y, const float *w, double scale,
                            double *partials)
    int fr_softmax_xent_f64(int n, int C, int n_threads, double *dz, double *loss,
                            const double *z, const int *y, const double *w, double scale,
                            double *partials)
    int fr_embedding_backward_f32(int B, int T, int E, int V, int skip_id, const int *ids,
                                  const int *lengths, const float *d_out, int *map,
                                  int capacity, int *rows_out, float *values_out, int *count)
    int fr_embedding_backward_f64(int B, int T, int E, int V, int skip_id, const int *ids,
                                  const int *lengths, const double *d_out, int *map,
                                  int capacity, int *rows_out, double *values_out,
                                  int *count)

CELLS = {'lstm': 0, 'gru': 1, 'rnn_tanh': 2, 'rnn_relu': 3}

# ---------------------------------------------------------------- BLAS thread control
# All parallelism is the core's own OpenMP; scipy's OpenBLAS must run single-threaded
# during a call, else OpenMP x BLAS threads oversubscribe the cores (and OpenBLAS'
# "_local" setter is process-global in pthreads builds, so it cannot be used per thread).

ctypedef void (*blas_set_t)(int) noexcept nogil
ctypedef int (*blas_get_t)() noexcept nogil
cdef blas_set_t _blas_set = NULL
cdef blas_get_t _blas_get = NULL
BLAS_THREADS_SYMBOL = None


def _find_blas_thread_functions():
    """(name, set address, get address) of the thread-count setter/getter of the BLAS
    scipy.linalg.cython_blas is linked against; Nones when it exposes none."""
    import scipy.linalg.cython_blas as cb
    try:
        lib = ctypes.CDLL(cb.__file__)
    except OSError:
        return None, None, None
    for prefix, suffix in (('scipy_openblas', ''), ('openblas', ''),
                           ('scipy_openblas', '64_'), ('openblas', '64_')):
        try:
            fset = getattr(lib, f'{prefix}_set_num_threads{suffix}')
            fget = getattr(lib, f'{prefix}_get_num_threads{suffix}')
        except AttributeError:
            continue
        return (f'{prefix}_set_num_threads{suffix}',
                ctypes.cast(fset, ctypes.c_void_p).value,
                ctypes.cast(fget, ctypes.c_void_p).value)
    return None, None, None


def _init_blas_threads():
    global _blas_set, _blas_get, BLAS_THREADS_SYMBOL
    name, fset, fget = _find_blas_thread_functions()
    if fset and fget:
        _blas_set = <blas_set_t><uintptr_t>fset
        _blas_get = <blas_get_t><uintptr_t>fget
        BLAS_THREADS_SYMBOL = name

_init_blas_threads()


# ---- idle OpenBLAS pools (numpy's and scipy's)
# After a multithreaded product, OpenBLAS' worker threads busy-wait for new work for a
# while (its THREAD_TIMEOUT, read from the environment once, when the library loads)
# before they sleep; numpy bundles its own OpenBLAS, separate from scipy's. Spinning,
# they take the cores from the core's OpenMP threads (a per-step model went from 28 to
# 63 ms a step after a numpy product). Setting their thread count to 1 does not stop
# threads already spinning (measured: bench/numpy_pool.py); OpenBLAS'
# blas_thread_shutdown_ does: it joins them at once, and the library starts a new pool
# on its next threaded call (the path it takes after fork).
#   * Other pools (numpy's): stopped as a core call that uses BLAS begins. Nothing
#     restarts them until numpy's next threaded product.
#   * scipy's pool (the one whose thread count the core sets to 1 during a call):
#     setting its count restarts a stopped pool (and the new thread spins), so it is
#     stopped only by hold_blas(), which fit holds for its whole run: set to 1 once,
#     then stopped; restored (and restarted) once at the end.
# A pool busy in another Python thread must not be shut down under it, so pools are
# stopped only when the calling thread is the process's only Python thread.
ctypedef int (*blas_shutdown_t)() noexcept nogil
cdef blas_shutdown_t _pool_shutdown[8]
cdef int _n_pools = 0
cdef blas_shutdown_t _own_pool_shutdown = NULL
OPENBLAS_POOLS = []     # paths of the OpenBLAS libraries whose idle pools are stopped


def _find_openblas_pools():
    """(path, address of blas_thread_shutdown_, whether it is the library of the
    thread-count setter the core uses) of every OpenBLAS loaded in the process (numpy's
    and scipy's bundled copies), read from /proc/self/maps (Linux only)."""
    try:
        with open('/proc/self/maps') as f:
            paths = sorted({line.split(None, 5)[5].strip() for line in f
                            if 'openblas' in line.lower() and len(line.split(None, 5)) == 6})
    except OSError:
        return []
    own = <uintptr_t>_blas_set
    found = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
            fn = getattr(lib, 'blas_thread_shutdown_')
        except (OSError, AttributeError):
            continue
        setter = getattr(lib, BLAS_THREADS_SYMBOL, None) if BLAS_THREADS_SYMBOL else None
        is_own = setter is not None and ctypes.cast(setter, ctypes.c_void_p).value == own
        found.append((path, ctypes.cast(fn, ctypes.c_void_p).value, is_own))
    return found


def _init_openblas_pools():
    global _n_pools, _own_pool_shutdown
    _n_pools = 0
    _own_pool_shutdown = NULL
    del OPENBLAS_POOLS[:]
    for path, addr, is_own in _find_openblas_pools():
        if is_own:
            _own_pool_shutdown = <blas_shutdown_t><uintptr_t>addr
        elif _n_pools < 8:
            _pool_shutdown[_n_pools] = <blas_shutdown_t><uintptr_t>addr
            _n_pools += 1
        else:
            continue
        OPENBLAS_POOLS.append(path)

_init_openblas_pools()

import threading as _threading


cdef bint _stop_idle_pools(bint own) except -1:
    if _threading.active_count() != 1:
        return False
    cdef int i
    with nogil:
        for i in range(_n_pools):
            _pool_shutdown[i]()
        if own and _own_pool_shutdown != NULL:
            _own_pool_shutdown()
    return True


def _set_pool_control(bint enabled):
    """Benchmark/testing hook: with False the core leaves idle OpenBLAS pools alone."""
    global _n_pools, _own_pool_shutdown
    if enabled:
        _init_openblas_pools()
    else:
        _n_pools = 0
        _own_pool_shutdown = NULL


def stop_idle_blas_pools():
    """Stop the worker threads of the OpenBLAS pools other than scipy's (numpy's: idle
    ones spin and take cores from the core's threads); they restart on their library's
    next threaded call. Every core call that uses BLAS does this first. Does nothing
    while other Python threads run (one of them may be using a pool). True when done."""
    return _stop_idle_pools(False)


def hold_blas():
    """Until the matching release_blas(): scipy's BLAS runs single-threaded and every
    idle OpenBLAS pool, scipy's included, is stopped, so that only the core's threads
    run (fit holds it for its whole run). Holds nest; the last release restores scipy's
    thread count."""
    _blas_hold_one()
    _stop_idle_pools(True)


def release_blas():
    """Ends a hold_blas()."""
    _blas_restore()


# The setting is process-wide, so overlapping calls (several Python threads) share one
# hold: the first call in saves the count and sets 1, the last call out restores it.
# Both run with the GIL held, which makes the counter updates atomic.
cdef int _blas_active = 0
cdef int _blas_saved = 0


cdef int _quiet_idle_pools() except -1:
    """Stops idle OpenBLAS pools unless a hold is active (it stopped them already)."""
    if _blas_active == 0:
        _stop_idle_pools(False)
    return 0


cdef int _blas_hold_one() except -1:
    global _blas_active, _blas_saved
    _quiet_idle_pools()
    if _blas_get == NULL:
        return 0
    if _blas_active == 0:
        _blas_saved = _blas_get()
        if _blas_saved != 1:
            _blas_set(1)
    _blas_active += 1
    return 0


cdef int _blas_restore() except -1:
    global _blas_active
    if _blas_get == NULL or _blas_active == 0:
        return 0
    _blas_active -= 1
    if _blas_active == 0 and _blas_saved > 1:
        _blas_set(_blas_saved)
    return 0


def blas_num_threads():
    """The thread count of scipy's BLAS (None when it cannot be read)."""
    return _blas_get() if _blas_get != NULL else None


def _set_blas_thread_control(bint enabled):
    """Testing hook: with False the core leaves scipy's BLAS thread count alone."""
    global _blas_set, _blas_get
    if not enabled:
        _blas_set = NULL
        _blas_get = NULL
    else:
        _init_blas_threads()


def avx512_paths():
    """True when the core runs its AVX-512 code: the packed float32 kernels and vector
    activations (the CPU has AVX-512F and FASTRNN_PORTABLE was not set at import)."""
    return bool(fr_kernel_available())


def openmp_enabled():
    """True when the core was compiled with OpenMP."""
    return bool(fr_openmp_enabled())


def max_threads():
    """OpenMP's default thread count (OMP_NUM_THREADS or the number of cores)."""
    return fr_max_threads()


def threads_used():
    """(threads of this thread's last core call, the most of its calls since
    reset_threads_used()): what the thread-count tests read to prove that several
    threads really worked."""
    return fr_last_threads(), fr_threads_used_max()


def reset_threads_used():
    fr_threads_used_reset()

# ---------------------------------------------------------------- buffer checks

cdef int _typenum_of(object dtype) except -1:
    if dtype == np.float32:
        return cnp.NPY_FLOAT32
    if dtype == np.float64:
        return cnp.NPY_FLOAT64
    raise TypeError(f"fastrnn core: dtype must be float32 or float64, got {dtype}")


cdef void* _ptr(object a, str name, int typenum, Py_ssize_t need, bint writable,
                bint optional=False) except? NULL:
    """Address of a C-contiguous array of type `typenum` holding at least `need` elements.
    (numpy's C macros: a batch-1 call hands over 14 arrays, and going through
    __array_interface__ and .flags cost more than the C work of a short sequence.)"""
    if a is None:
        if optional:
            return NULL
        raise ValueError(f"fastrnn core: {name} is required")
    if not isinstance(a, np.ndarray):
        raise TypeError(f"fastrnn core: {name} must be a numpy array")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if cnp.PyArray_TYPE(arr) != typenum:
        raise TypeError(f"fastrnn core: {name} has dtype {a.dtype}, expected "
                        f"{cnp.PyArray_DescrFromType(typenum)}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        raise ValueError(f"fastrnn core: {name} must be C-contiguous")
    if writable and not cnp.PyArray_ISWRITEABLE(arr):
        raise ValueError(f"fastrnn core: {name} must be writable")
    cdef Py_ssize_t size = cnp.PyArray_SIZE(arr)
    if size < need:
        raise ValueError(f"fastrnn core: {name} has {size} elements, needs {need}")
    if size == 0:
        return NULL
    return cnp.PyArray_DATA(arr)


cdef int _check_lengths_in(const int *plen, Py_ssize_t B, int T) except -1:
    """ValueError unless every length lies in [1, T] (a loop: numpy's min and max took
    longer than a short batch-1 call's C work)."""
    cdef Py_ssize_t i
    for i in range(B):
        if plen[i] < 1 or plen[i] > T:
            raise ValueError(f"fastrnn core: lengths must lie in [1, {T}]")
    return 0


def all_finite(a):
    """Whether a C-contiguous float32 or float64 array holds no NaN or infinity (one
    pass over the exponent bits, no temporary array)."""
    if not isinstance(a, np.ndarray):
        raise TypeError("fastrnn core: all_finite needs a numpy array")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        raise ValueError("fastrnn core: all_finite needs a C-contiguous array")
    cdef int tn = cnp.PyArray_TYPE(arr)
    cdef size_t n = <size_t>cnp.PyArray_SIZE(arr)
    cdef int ok
    if tn == cnp.NPY_FLOAT32:
        with nogil:
            ok = fr_all_finite_f32(<const float*>cnp.PyArray_DATA(arr), n)
    elif tn == cnp.NPY_FLOAT64:
        with nogil:
            ok = fr_all_finite_f64(<const double*>cnp.PyArray_DATA(arr), n)
    else:
        raise TypeError(f"fastrnn core: all_finite needs float32 or float64, got {a.dtype}")
    return bool(ok)


cdef fr_dims _dims(str cell, int batch, int steps, int input_size, int hidden, bint reverse,
                   int n_threads, int chunk, int ld, bint batch_first=False) except *:
    cdef fr_dims d
    if cell not in CELLS:
        raise ValueError(f"fastrnn core: unknown cell {cell!r}")
    if batch < 1 or steps < 1 or input_size < 1 or hidden < 1 or ld < hidden:
        raise ValueError("fastrnn core: sizes must be positive")
    if <long long>steps * batch * fr_gates(CELLS[cell]) * hidden >= 2 ** 31 - 1:
        raise ValueError("fastrnn core: steps * batch * gates * hidden must stay below 2**31 "
                         "(32-bit BLAS); split the batch")
    d.cell = CELLS[cell]
    d.batch = batch
    d.steps = steps
    d.input = input_size
    d.hidden = hidden
    d.reverse = 1 if reverse else 0
    d.n_threads = max(1, n_threads)
    d.chunk = chunk
    d.ld = ld
    d.batch_first = 1 if batch_first else 0
    return d


def workspace_sizes(str cell, int batch, int steps, int input_size, int hidden, bint reverse,
                    int n_threads, int chunk, bint batch_first=False):
    """(forward, backward) workspace sizes in elements."""
    cdef fr_dims d = _dims(cell, batch, steps, input_size, hidden, reverse, n_threads, chunk,
                           hidden, batch_first)
    return fr_forward_workspace(&d), fr_backward_workspace(&d)


def splits_as_one_chunk(str cell, int input_size, int hidden, bint bf16=False):
    """Whether inference of one layer-direction, its batch as one chunk, runs with the
    hidden units split over the threads (given at least 2 threads), in float32 or (bf16)
    bfloat16: the core's own rule (fr_splits_as_one_chunk, fr_bf16_splits_as_one_chunk);
    it does not depend on the batch or the steps."""
    cdef fr_dims d = _dims(cell, 1, 1, input_size, hidden, False, 2, 1, hidden)
    return bool(fr_bf16_splits_as_one_chunk(&d) if bf16 else fr_splits_as_one_chunk(&d))


def weight_cache_size(str cell, int input_size, int hidden):
    """Elements (float32) of the packed-weight cache of one layer-direction: depends on
    the cell and sizes only (see fr_forward_cached_f32)."""
    cdef fr_dims d = _dims(cell, 1, 1, input_size, hidden, False, 1, 1, hidden)
    return fr_weight_cache_size(&d)


def store_width(str cell, int hidden):
    return fr_store_width(CELLS[cell], hidden)

# ---------------------------------------------------------------- calls


cdef struct _fwd_ptrs:
    char *out
    void *h_n
    void *c_n
    const void *x
    const int *lengths
    const void *h0
    const void *c0
    const void *w_ih
    const void *w_hh
    const void *b_ih
    const void *b_hh


cdef fr_dims _forward_args(_fwd_ptrs *p, str cell, bint reverse, int n_threads, int chunk,
                           int tn, out, Py_ssize_t col, h_n, c_n, x, lengths, h0, c0,
                           w_ih, w_hh, b_ih, b_hh, bint batch_first) except *:
    """The dims of a forward call and the addresses of the buffers forward and
    forward_bf16 share, each checked for dtype, contiguity, writability and size
    (and the lengths for their range) before C sees them."""
    if batch_first:
        B, T, I = x.shape
    else:
        T, B, I = x.shape
    H = h0.shape[1]
    ld = out.shape[2] if out is not None else H
    cdef fr_dims d = _dims(cell, B, T, I, H, reverse, n_threads, chunk, ld, batch_first)
    cdef bint lstm = d.cell == 0
    cdef int G = fr_gates(d.cell)
    cdef Py_ssize_t TB = <Py_ssize_t>T * B
    if out is not None and (col < 0 or col + H > ld):
        raise ValueError("fastrnn core: column offset out of range")
    p.out = <char*>_ptr(out, 'out', tn, TB * ld, True, True)
    if p.out != NULL:
        p.out += col * (4 if tn == cnp.NPY_FLOAT32 else 8)
    p.h_n = _ptr(h_n, 'h_n', tn, B * H, True)
    p.c_n = _ptr(c_n, 'c_n', tn, B * H, True, not lstm)
    p.x = _ptr(x, 'x', tn, TB * I, False)
    p.lengths = <int*>_ptr(lengths, 'lengths', cnp.NPY_INT32, B, False)
    p.h0 = _ptr(h0, 'h0', tn, B * H, False)
    p.c0 = _ptr(c0, 'c0', tn, B * H, False, not lstm)
    p.w_ih = _ptr(w_ih, 'w_ih', tn, G * H * I, False)
    p.w_hh = _ptr(w_hh, 'w_hh', tn, G * H * H, False)
    p.b_ih = _ptr(b_ih, 'b_ih', tn, G * H, False)
    p.b_hh = _ptr(b_hh, 'b_hh', tn, G * H, False)
    if lstm and (p.c_n == NULL or p.c0 == NULL):
        raise ValueError("fastrnn core: missing LSTM cell-state buffers")
    _check_lengths_in(p.lengths, B, T)
    return d


def forward(str cell, bint reverse, int n_threads, int chunk,
            out, Py_ssize_t col, h_n, c_n, h_all, c_all, store,
            x, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, ws, bint batch_first=False,
            wcache=None):
    """One layer-direction forward. x is (T, B, I), out (T, B, ld) — or (B, T, .) with
    batch_first — and this direction writes columns [col, col + H) of out; training
    buffers h_all, c_all, store are None for inference. wcache: float32 inference only,
    the layer-direction's packed-weight cache (weight_cache_size(...) float32 elements,
    zeroed when made, one per calling thread), or None."""
    cdef int tn = _typenum_of(x.dtype)
    cdef _fwd_ptrs p
    cdef fr_dims d = _forward_args(&p, cell, reverse, n_threads, chunk, tn, out, col, h_n,
                                   c_n, x, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh,
                                   batch_first)
    cdef bint lstm = d.cell == 0
    cdef int B = d.batch, T = d.steps, H = d.hidden
    cdef int S = fr_store_width(d.cell, H)
    cdef Py_ssize_t TB = <Py_ssize_t>T * B
    cdef bint training = h_all is not None
    cdef void *ph_all = _ptr(h_all, 'h_all', tn, (T + 1) * B * H, True, True)
    cdef void *pc_all = _ptr(c_all, 'c_all', tn, (T + 1) * B * H, True, not (lstm and training))
    cdef void *pst = _ptr(store, 'store', tn, TB * S, True, not (training and S > 0))
    cdef size_t need = fr_forward_workspace(&d)
    if need == 0:
        raise MemoryError("fastrnn core: workspace size overflows")
    cdef void *pws = _ptr(ws, 'ws', tn, need, True)
    if training and S > 0 and pst == NULL:
        raise ValueError("fastrnn core: missing training buffers")
    cdef void *pwc = NULL
    if wcache is not None:
        if tn != cnp.NPY_FLOAT32 or training:
            raise ValueError("fastrnn core: the weight cache is for float32 inference only")
        pwc = _ptr(wcache, 'wcache', tn, fr_weight_cache_size(&d), True)
    cdef int rc
    _blas_hold_one()          # no exception can come between this and the restore
    if pwc != NULL:
        with nogil:
            rc = fr_forward_cached_f32(&d, <float*>p.out, <float*>p.h_n, <float*>p.c_n,
                                       <const float*>p.x, p.lengths, <const float*>p.h0,
                                       <const float*>p.c0, <const float*>p.w_ih,
                                       <const float*>p.w_hh, <const float*>p.b_ih,
                                       <const float*>p.b_hh, <float*>pws, <float*>pwc,
                                       <fr_sgemm_t>sgemm)
    elif tn == cnp.NPY_FLOAT32:
        with nogil:
            rc = fr_forward_f32(&d, <float*>p.out, <float*>p.h_n, <float*>p.c_n, <float*>ph_all,
                                <float*>pc_all, <float*>pst, <const float*>p.x, p.lengths,
                                <const float*>p.h0, <const float*>p.c0, <const float*>p.w_ih,
                                <const float*>p.w_hh, <const float*>p.b_ih, <const float*>p.b_hh,
                                <float*>pws, <fr_sgemm_t>sgemm)
    else:
        with nogil:
            rc = fr_forward_f64(&d, <double*>p.out, <double*>p.h_n, <double*>p.c_n,
                                <double*>ph_all, <double*>pc_all, <double*>pst,
                                <const double*>p.x, p.lengths, <const double*>p.h0,
                                <const double*>p.c0, <const double*>p.w_ih, <const double*>p.w_hh,
                                <const double*>p.b_ih, <const double*>p.b_hh, <double*>pws,
                                <fr_dgemm_t>dgemm)
    _blas_restore()
    if rc != 0:
        raise ValueError("fastrnn core: invalid sizes or lengths")


def backward(str cell, bint reverse, int n_threads, int chunk,
             dx, bint accumulate_dx, dw_ih, dw_hh, db_ih, db_hh, dh0, dc0,
             d_out, Py_ssize_t col, d_h_n, d_c_n, h_all, c_all, store, x, lengths,
             w_ih, w_hh, ws, bint batch_first=False):
    """One layer-direction backward; parameter gradients are ADDED to dw_*, db_*.
    dx None: dX is not computed (a first layer whose input gradient nobody reads); the
    parameter gradients and dh0/dc0 are the same, bit for bit. store is used up: LSTM
    writes its gate gradients over it (a second backward needs a new training forward)."""
    if batch_first:
        B, T, I = x.shape
    else:
        T, B, I = x.shape
    H = dh0.shape[1]
    dtype = x.dtype
    cdef int tn = _typenum_of(dtype)
    ld = d_out.shape[2] if d_out is not None else H
    cdef fr_dims d = _dims(cell, B, T, I, H, reverse, n_threads, chunk, ld, batch_first)
    cdef bint lstm = d.cell == 0
    cdef int G = fr_gates(d.cell), S = fr_store_width(d.cell, H)
    cdef Py_ssize_t TB = <Py_ssize_t>T * B
    if d_out is not None and (col < 0 or col + H > ld):
        raise ValueError("fastrnn core: column offset out of range")
    cdef void *pdx = _ptr(dx, 'dx', tn, TB * I, True, True)   # optional: no dX
    cdef void *pdwi = _ptr(dw_ih, 'dw_ih', tn, G * H * I, True)
    cdef void *pdwh = _ptr(dw_hh, 'dw_hh', tn, G * H * H, True)
    cdef void *pdbi = _ptr(db_ih, 'db_ih', tn, G * H, True)
    cdef void *pdbh = _ptr(db_hh, 'db_hh', tn, G * H, True)
    cdef void *pdh0 = _ptr(dh0, 'dh0', tn, B * H, True)
    cdef void *pdc0 = _ptr(dc0, 'dc0', tn, B * H, True, not lstm)
    cdef char *pdo = <char*>_ptr(d_out, 'd_out', tn, TB * ld, False, True)
    if pdo != NULL:
        pdo += col * (4 if tn == cnp.NPY_FLOAT32 else 8)
    cdef void *pdhn = _ptr(d_h_n, 'd_h_n', tn, B * H, False, True)
    cdef void *pdcn = _ptr(d_c_n, 'd_c_n', tn, B * H, False, True)
    cdef void *ph_all = _ptr(h_all, 'h_all', tn, (T + 1) * B * H, False)
    cdef void *pc_all = _ptr(c_all, 'c_all', tn, (T + 1) * B * H, False, not lstm)
    # written: an LSTM backward leaves its gate gradients over the stored gates
    cdef void *pst = _ptr(store, 'store', tn, TB * S, True, S == 0)
    cdef void *px = _ptr(x, 'x', tn, TB * I, False)
    cdef int *plen = <int*>_ptr(lengths, 'lengths', cnp.NPY_INT32, B, False)
    cdef void *pwi = _ptr(w_ih, 'w_ih', tn, G * H * I, False)
    cdef void *pwh = _ptr(w_hh, 'w_hh', tn, G * H * H, False)
    cdef size_t need = fr_backward_workspace(&d)
    if need == 0:
        raise MemoryError("fastrnn core: workspace size overflows")
    cdef void *pws = _ptr(ws, 'ws', tn, need, True)
    if lstm and (pdc0 == NULL or pc_all == NULL):
        raise ValueError("fastrnn core: missing LSTM cell-state buffers")
    if S > 0 and pst == NULL:
        raise ValueError("fastrnn core: missing stored gates")
    _check_lengths_in(plen, B, T)
    cdef int rc
    cdef int acc = 1 if accumulate_dx else 0
    _blas_hold_one()          # no exception can come between this and the restore
    if tn == cnp.NPY_FLOAT32:
        with nogil:
            rc = fr_backward_f32(&d, <float*>pdx, <float*>pdwi, <float*>pdwh, <float*>pdbi,
                                 <float*>pdbh, <float*>pdh0, <float*>pdc0,
                                 <const float*>pdo, <const float*>pdhn, <const float*>pdcn,
                                 <const float*>ph_all, <const float*>pc_all,
                                 <float*>pst, <const float*>px, plen,
                                 <const float*>pwi, <const float*>pwh, acc, <float*>pws,
                                 <fr_sgemm_t>sgemm)
    else:
        with nogil:
            rc = fr_backward_f64(&d, <double*>pdx, <double*>pdwi, <double*>pdwh,
                                 <double*>pdbi, <double*>pdbh, <double*>pdh0, <double*>pdc0,
                                 <const double*>pdo, <const double*>pdhn, <const double*>pdcn,
                                 <const double*>ph_all, <const double*>pc_all,
                                 <double*>pst, <const double*>px, plen,
                                 <const double*>pwi, <const double*>pwh, acc, <double*>pws,
                                 <fr_dgemm_t>dgemm)
    _blas_restore()
    if rc != 0:
        raise ValueError("fastrnn core: invalid sizes or lengths")



def cell_info():
    """{cell: {'gates', 'states', 'stored' (tuples of names in PyTorch's order),
    'store_width' (values stored per step and sample for backward, in units of hidden)}}
    for 'lstm', 'gru', 'rnn_tanh', 'rnn_relu': the C core's own description of each cell."""
    cdef const fr_cell_desc *c
    info = {}
    for name, code in CELLS.items():
        c = fr_cell_info(code)
        split = lambda b: tuple(x for x in b.decode().split(',') if x)
        info[name] = {'gates': split(c.gates), 'states': split(c.states),
                      'stored': split(c.stored), 'store_width': c.store_width}
    return info

# ---------------------------------------------------------------- output head and embedding
# Same rules as forward/backward above: every buffer checked here (dtype, C order,
# writability, exact shape), so the C can never read or write out of bounds.

_INT_MAX = 2 ** 31 - 1


def _shape(a, str name, tuple shape):
    """a's shape after checking it is an ndarray with len(shape) axes, each equal to the
    entry of `shape` that is not None; the shape as a tuple."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"fastrnn core: {name} must be a numpy array")
    if a.ndim != len(shape) or any(s is not None and s != t for s, t in zip(shape, a.shape)):
        want = ", ".join("." if s is None else str(s) for s in shape)
        raise ValueError(f"fastrnn core: {name} must have shape ({want}), got {a.shape}")
    for t in a.shape:
        if t > _INT_MAX:
            raise ValueError(f"fastrnn core: {name} has an axis of 2**31 or more")
    return a.shape


def dense_workspace_size(Py_ssize_t n, Py_ssize_t k, Py_ssize_t m):
    """Elements of the workspace dense_forward / dense_backward need for n rows, k
    inputs and m outputs."""
    if n < 0 or k < 1 or m < 1 or n > _INT_MAX or k > _INT_MAX or m > _INT_MAX:
        raise ValueError(f"fastrnn core: dense sizes n={n}, k={k}, m={m} out of range")
    cdef size_t need = fr_dense_workspace(<int>n, <int>k, <int>m)
    if need == 0:
        raise MemoryError("fastrnn core: dense workspace size overflows")
    return need


def dense_forward(y, x, w, b, ws, int n_threads):
    """y (n, m) = x (n, k) w^T + b, with w (m, k) and b (m,): C-contiguous arrays of one
    float dtype; ws holds dense_workspace_size(n, k, m) elements of it."""
    n, k = _shape(x, 'x', (None, None))
    m, _ = _shape(w, 'w', (None, k))
    _shape(b, 'b', (m,))
    _shape(y, 'y', (n, m))
    cdef int tn = _typenum_of(x.dtype)
    cdef size_t need = dense_workspace_size(n, k, m)
    cdef void *py = _ptr(y, 'y', tn, n * m, True)
    cdef void *px = _ptr(x, 'x', tn, n * k, False)
    cdef void *pw = _ptr(w, 'w', tn, m * k, False)
    cdef void *pb = _ptr(b, 'b', tn, m, False)
    cdef void *pws = _ptr(ws, 'ws', tn, need, True)
    cdef int ni = n, ki = k, mi = m, nt = max(1, n_threads), rc
    _blas_hold_one()          # no exception can come between this and the restore
    if tn == cnp.NPY_FLOAT32:
        with nogil:
            rc = fr_dense_forward_f32(ni, ki, mi, nt, <float*>py, <const float*>px,
                                      <const float*>pw, <const float*>pb, <float*>pws,
                                      <fr_sgemm_t>sgemm)
    else:
        with nogil:
            rc = fr_dense_forward_f64(ni, ki, mi, nt, <double*>py, <const double*>px,
                                      <const double*>pw, <const double*>pb, <double*>pws,
                                      <fr_dgemm_t>dgemm)
    _blas_restore()
    if rc != 0:
        raise ValueError("fastrnn core: invalid dense sizes")


def dense_backward(dx, dw, db, dy, x, w, ws, int n_threads):
    """dx (n, k) = dy w (written; None: not computed), dw (m, k) += dy^T x and
    db (m,) += dy summed over rows, for dy (n, m), x (n, k), w (m, k); ws holds
    dense_workspace_size(n, k, m) elements."""
    n, k = _shape(x, 'x', (None, None))
    m, _ = _shape(w, 'w', (None, k))
    _shape(dy, 'dy', (n, m))
    _shape(dw, 'dw', (m, k))
    _shape(db, 'db', (m,))
    if dx is not None:
        _shape(dx, 'dx', (n, k))
    cdef int tn = _typenum_of(x.dtype)
    cdef size_t need = dense_workspace_size(n, k, m)
    cdef void *pdx = _ptr(dx, 'dx', tn, n * k, True, True)
    cdef void *pdw = _ptr(dw, 'dw', tn, m * k, True)
    cdef void *pdb = _ptr(db, 'db', tn, m, True)
    cdef void *pdy = _ptr(dy, 'dy', tn, n * m, False)
    cdef void *px = _ptr(x, 'x', tn, n * k, False)
    cdef void *pw = _ptr(w, 'w', tn, m * k, False)
    cdef void *pws = _ptr(ws, 'ws', tn, need, True)
    for a, name in ((dx, 'dx'), (dw, 'dw'), (db, 'db')):
        for c, cname in ((x, 'x'), (dy, 'dy'), (w, 'w')):
            if a is not None and np.may_share_memory(a, c):
                raise ValueError(f"fastrnn core: {name} must not overlap {cname}")
    cdef int ni = n, ki = k, mi = m, nt = max(1, n_threads), rc
    _blas_hold_one()          # no exception can come between this and the restore
    if tn == cnp.NPY_FLOAT32:
        with nogil:
            rc = fr_dense_backward_f32(ni, ki, mi, nt, <float*>pdx, <float*>pdw, <float*>pdb,
                                       <const float*>pdy, <const float*>px, <const float*>pw,
                                       <float*>pws, <fr_sgemm_t>sgemm)
    else:
        with nogil:
            rc = fr_dense_backward_f64(ni, ki, mi, nt, <double*>pdx, <double*>pdw,
                                       <double*>pdb, <const double*>pdy, <const double*>px,
                                       <const double*>pw, <double*>pws, <fr_dgemm_t>dgemm)
    _blas_restore()
    if rc != 0:
        raise ValueError("fastrnn core: invalid dense sizes")


def softmax_xent(z, y, w, double scale, dz, int n_threads):
    """Sum over rows of w_r * (-log softmax(z_r)[y_r]) as a float, for logits z (n, C),
    int32 labels y (n,) in [0, C) and row weights w (n,) (None: ones); when dz (n, C) is
    given it receives scale * w_r * (softmax(z_r) - onehot(y_r))."""
    n, C = _shape(z, 'z', (None, None))
    if C < 1:
        raise ValueError("fastrnn core: z needs at least one class (column)")
    _shape(y, 'y', (n,))
    if w is not None:
        _shape(w, 'w', (n,))
    if dz is not None:
        _shape(dz, 'dz', (n, C))
    cdef int tn = _typenum_of(z.dtype)
    cdef void *pz = _ptr(z, 'z', tn, n * C, False)
    cdef int *py = <int*>_ptr(y, 'y', cnp.NPY_INT32, n, False)
    cdef void *pw = _ptr(w, 'w', tn, n, False, True)
    cdef void *pdz = _ptr(dz, 'dz', tn, n * C, True, True)
    if dz is not None and (np.may_share_memory(dz, z) or np.may_share_memory(dz, y)
                           or (w is not None and np.may_share_memory(dz, w))):
        raise ValueError("fastrnn core: dz must not overlap z, y or w")
    if n and (y.min() < 0 or y.max() >= C):
        raise ValueError(f"fastrnn core: labels y must lie in [0, {C}), got min {y.min()}, "
                         f"max {y.max()}")
    partials = np.empty(max(1, fr_softmax_xent_workspace(n)), dtype=np.float64)
    cdef double *pp = <double*>_ptr(partials, 'partials', cnp.NPY_FLOAT64, 1, True)
    cdef int ni = n, ci = C, nt = max(1, n_threads), rc
    cdef double loss = 0
    if n == 0:
        return 0.0
    if tn == cnp.NPY_FLOAT32:
        with nogil:
            rc = fr_softmax_xent_f32(ni, ci, nt, <float*>pdz, &loss, <const float*>pz, py,
                                     <const float*>pw, scale, pp)
    else:
        with nogil:
            rc = fr_softmax_xent_f64(ni, ci, nt, <double*>pdz, &loss, <const double*>pz, py,
                                     <const double*>pw, scale, pp)
    if rc != 0:
        raise ValueError("fastrnn core: invalid sizes or labels")
    return loss


def embedding_backward(ids, lengths, d_out, map, rows_out, values_out, int skip_id=-1):
    """Row-sparse gradient of an embedding table of V = map.size rows: ids (B, T) int32,
    lengths (B,) int32 in [0, T], d_out (B, T, E); writes the distinct ids at valid
    positions (skip_id left out) in order of first appearance to rows_out (int32) and
    their summed d_out rows to values_out (rows, E); map is V int32 scratch, -1 on entry
    and on exit. Returns the number of distinct ids."""
    B, T = _shape(ids, 'ids', (None, None))
    _shape(lengths, 'lengths', (B,))
    _, _, E = _shape(d_out, 'd_out', (B, T, None))
    (V,) = _shape(map, 'map', (None,))
    (cap,) = _shape(rows_out, 'rows_out', (None,))
    _shape(values_out, 'values_out', (cap, E))
    if E < 1 or V < 1:
        raise ValueError("fastrnn core: embedding dim and vocabulary must be positive")
    cdef int tn = _typenum_of(d_out.dtype)
    cdef int *pids = <int*>_ptr(ids, 'ids', cnp.NPY_INT32, 0, False)
    cdef int *plen = <int*>_ptr(lengths, 'lengths', cnp.NPY_INT32, 0, False)
    cdef void *pdo = _ptr(d_out, 'd_out', tn, 0, False)
    cdef int *pmap = <int*>_ptr(map, 'map', cnp.NPY_INT32, V, True)
    cdef int *prows = <int*>_ptr(rows_out, 'rows_out', cnp.NPY_INT32, 0, True)
    cdef void *pval = _ptr(values_out, 'values_out', tn, 0, True)
    for a, name in ((map, 'map'), (rows_out, 'rows_out'), (values_out, 'values_out')):
        for c, cname in ((ids, 'ids'), (lengths, 'lengths'), (d_out, 'd_out')):
            if np.may_share_memory(a, c):
                raise ValueError(f"fastrnn core: {name} must not overlap {cname}")
    if np.may_share_memory(map, rows_out) or np.may_share_memory(rows_out, values_out) \
            or np.may_share_memory(map, values_out):
        raise ValueError("fastrnn core: map, rows_out and values_out must not overlap")
    if B and (lengths.min() < 0 or lengths.max() > T):
        raise ValueError(f"fastrnn core: lengths must lie in [0, {T}]")
    n_valid = int(lengths.sum(dtype=np.int64)) if B else 0
    if cap < min(V, n_valid):
        raise ValueError(f"fastrnn core: rows_out has {cap} rows, needs "
                         f"min(V, valid tokens) = {min(V, n_valid)}")
    cdef int Bi = B, Ti = T, Ei = E, Vi = V, capi = min(cap, _INT_MAX), count = 0, rc
    with nogil:
        if tn == cnp.NPY_FLOAT32:
            rc = fr_embedding_backward_f32(Bi, Ti, Ei, Vi, skip_id, pids, plen,
                                           <const float*>pdo, pmap, capi, prows,
                                           <float*>pval, &count)
        else:
            rc = fr_embedding_backward_f64(Bi, Ti, Ei, Vi, skip_id, pids, plen,
                                           <const double*>pdo, pmap, capi, prows,
                                           <double*>pval, &count)
    if rc != 0:
        raise ValueError(f"fastrnn core: token ids at valid positions must lie in [0, {V})")
    return count


# ---------------------------------------------------------------- optimizer step (optim.c)
# Clipping by global norm and one optimizer step over every dense parameter of a model in
# one call. Every array is checked here (dtype, C order, writability, exact size).

cdef extern from "optim.h" nogil:
    ctypedef struct fr_optim_hyper:
        int kind
        int nesterov
        double lr, weight_decay, momentum, beta1, beta2, alpha, eps
    ctypedef struct fr_optim_array:
        void *p
        void *g
        void *s1
        void *s2
        long long n
        double c1, c2
        int first
    size_t fr_optim_workspace(int n_arrays, const fr_optim_array *a)
    int fr_optim_step_f32(const fr_optim_hyper *h, int n_arrays, const fr_optim_array *a,
                          double max_norm, int n_threads, double *ws, double *total_norm)
    int fr_optim_step_f64(const fr_optim_hyper *h, int n_arrays, const fr_optim_array *a,
                          double max_norm, int n_threads, double *ws, double *total_norm)

OPTIMIZER_KINDS = {'sgd': 0, 'adam': 1, 'adamw': 2, 'rmsprop': 3}


cdef void* _optim_array(object a, str what, Py_ssize_t i, int typenum, Py_ssize_t n,
                        bint optional=False) except? NULL:
    """Address of a writable C-contiguous array of `typenum` with exactly n elements,
    the array `what`[i] (its name is only formatted for an error)."""
    cdef cnp.ndarray arr
    if a is None and optional:
        return NULL
    if isinstance(a, np.ndarray):
        arr = <cnp.ndarray>a
        if (cnp.PyArray_TYPE(arr) == typenum and cnp.PyArray_IS_C_CONTIGUOUS(arr)
                and cnp.PyArray_ISWRITEABLE(arr) and cnp.PyArray_SIZE(arr) == n and n > 0):
            return cnp.PyArray_DATA(arr)
    name = f'{what}[{i}]'
    cdef void *ptr = _ptr(a, name, typenum, n, True)
    if cnp.PyArray_SIZE(<cnp.ndarray>a) != n:
        raise ValueError(f"fastrnn core: {name} has {cnp.PyArray_SIZE(<cnp.ndarray>a)} "
                         f"elements, expected {n}")
    return ptr


def optim_step(str kind, tuple hyper, list params, list grads, list state1, list state2,
               list c1, list c2, list first, list extra, double max_norm, int n_threads):
    """Clip and step in one call (src_c/optim.c). kind: 'sgd', 'adam', 'adamw',
    'rmsprop'; hyper = (lr, weight_decay, momentum, nesterov, beta1, beta2, alpha, eps).
    Array i: params[i] updated in place by grads[i] with its state arrays state1[i],
    state2[i] (None when unused; see optim.h), Adam's c1[i] = lr / (1 - beta1^t) and
    c2[i] = sqrt(1 - beta2^t), first[i]: SGD's momentum buffer starts at this step.
    extra: gradients that only count in the norm (and are scaled with the others).
    max_norm > 0 clips by the global norm first (every gradient scaled in place) and
    the norm before clipping is returned; otherwise nothing is clipped and None is
    returned. All arrays: one float dtype, C-contiguous, writable."""
    if kind not in OPTIMIZER_KINDS:
        raise ValueError(f"fastrnn core: unknown optimizer {kind!r}")
    cdef Py_ssize_t n = len(params), ne = len(extra), i
    if not (len(grads) == len(state1) == len(state2) == len(c1) == len(c2) == len(first)
            == n):
        raise ValueError("fastrnn core: params, grads, state1, state2, c1, c2 and first "
                         "must have the same length")
    if len(hyper) != 8:
        raise ValueError("fastrnn core: hyper must be (lr, weight_decay, momentum, "
                         "nesterov, beta1, beta2, alpha, eps)")
    cdef fr_optim_hyper h
    h.kind = OPTIMIZER_KINDS[kind]
    h.lr, h.weight_decay, h.momentum = hyper[0], hyper[1], hyper[2]
    h.nesterov = 1 if hyper[3] else 0
    h.beta1, h.beta2, h.alpha, h.eps = hyper[4], hyper[5], hyper[6], hyper[7]
    if n + ne == 0:
        return 0.0 if max_norm > 0 else None
    first_array = params[0] if n else extra[0]
    if not isinstance(first_array, np.ndarray):
        raise TypeError("fastrnn core: params and grads must be numpy arrays")
    cdef int tn = _typenum_of(first_array.dtype)
    cdef bint needs1 = h.kind != 0 or h.momentum != 0
    cdef bint needs2 = h.kind in (1, 2) or (h.kind == 3 and h.momentum != 0)
    cdef fr_optim_array *arr = <fr_optim_array*>malloc((n + ne) * sizeof(fr_optim_array))
    if arr == NULL:
        raise MemoryError()
    cdef double *ws = NULL
    cdef double total = -1
    cdef int rc, nt = max(1, n_threads)
    cdef Py_ssize_t size
    try:
        for i in range(n):
            p = params[i]
            if not isinstance(p, np.ndarray):
                raise TypeError(f"fastrnn core: params[{i}] must be a numpy array")
            size = cnp.PyArray_SIZE(<cnp.ndarray>p)
            arr[i].n = size
            arr[i].p = _optim_array(p, 'params', i, tn, size)
            arr[i].g = _optim_array(grads[i], 'grads', i, tn, size)
            arr[i].s1 = _optim_array(state1[i], 'state1', i, tn, size, not needs1)
            arr[i].s2 = _optim_array(state2[i], 'state2', i, tn, size, not needs2)
            if size and (arr[i].p == arr[i].g or arr[i].p == arr[i].s1
                         or arr[i].p == arr[i].s2 or arr[i].g == arr[i].s1
                         or arr[i].g == arr[i].s2
                         or (arr[i].s1 != NULL and arr[i].s1 == arr[i].s2)):
                raise ValueError(f"fastrnn core: params[{i}], grads[{i}] and its state "
                                 f"arrays must be distinct arrays")
            arr[i].c1 = c1[i]
            arr[i].c2 = c2[i]
            arr[i].first = 1 if first[i] else 0
        for i in range(ne):
            g = extra[i]
            if not isinstance(g, np.ndarray):
                raise TypeError(f"fastrnn core: extra[{i}] must be a numpy array")
            size = cnp.PyArray_SIZE(<cnp.ndarray>g)
            arr[n + i].n = size
            arr[n + i].g = _optim_array(g, 'extra', i, tn, size)
            arr[n + i].p = arr[n + i].s1 = arr[n + i].s2 = NULL
            arr[n + i].c1 = arr[n + i].c2 = 0
            arr[n + i].first = 0
        ws = <double*>malloc(fr_optim_workspace(<int>(n + ne), arr) * sizeof(double))
        if ws == NULL:
            raise MemoryError()
        with nogil:
            if tn == cnp.NPY_FLOAT32:
                rc = fr_optim_step_f32(&h, <int>(n + ne), arr, max_norm, nt, ws, &total)
            else:
                rc = fr_optim_step_f64(&h, <int>(n + ne), arr, max_norm, nt, ws, &total)
    finally:
        free(arr)
        free(ws)
    if rc != 0:
        raise ValueError("fastrnn core: invalid optimizer call (kind or state arrays)")
    return total if max_norm > 0 else None


# ---------------------------------------------------------------- streaming (stream.c)
# One object per running stream: it owns its buffer (packed weights, state, scratch) and
# its output array, so streams over one model never share anything writable; one stream
# used by two threads at once is refused (RuntimeError), never raced.

cdef int _REAL_KINDS = 0


cdef class Stream:
    """Step-by-step inference over a stack of unidirectional layers (+ optional head).

    Stream(cell, batch, w_ih, w_hh, b_ih, b_hh, head_w=None, head_b=None, mean=None,
    scale=None, emb=None, known=None, chunk=0): w_ih ... b_hh are lists with one array
    per layer (PyTorch's shapes); head_w (M, H), head_b (M,) or None; mean, scale (I,)
    standardise float input as (x - mean) / scale; emb (V + 1, I) and known (V,) bool
    make it a token stream (ids >= V or not known read row V). chunk: the samples per
    work item of the forward whose bits the stream reproduces (fr_forward_fuses).
    All arrays C-contiguous, one float dtype; the recurrent and head weights are copied
    (packed) now, emb and known are read in place at every step.

    step(x) advances one step: x (batch, I) floats or (batch,) token ids; returns the
    output of that step, (batch, M) (or the top layer's h, (batch, H), without a head),
    as a view of a buffer the next call overwrites (copy=True for a new array).
    step_many(X, every=True): X (batch, K, I) or (batch, K) ids; every=True returns a
    new (batch, K, W) array of each step's output, every=False the last step's output
    (the buffer, as step). reset() zeroes the state; get_state() / set_state(h, c=None)
    read and write it, (layers, batch, H) arrays (c for LSTM only)."""

    cdef fr_stream_dims d
    cdef object _ws, _out, _emb, _known, _zeros
    cdef void *_pws
    cdef void *_pout
    cdef const void *_pemb
    cdef const unsigned char *_pknown
    cdef int _tn, _busy, _blas, _width
    cdef readonly object dtype
    cdef readonly int batch_size, n_inputs, hidden_size, num_layers, n_outputs
    cdef readonly bint tokens
    cdef readonly str cell

    def __init__(self, str cell, int batch, list w_ih, list w_hh, list b_ih, list b_hh,
                 head_w=None, head_b=None, mean=None, scale=None, emb=None, known=None,
                 int chunk=0):
        cdef int L, G, GH, I, H, M, V, k, rc
        cdef size_t need
        cdef const void **ptrs
        cdef void *phw
        cdef void *phb
        cdef void *pm
        cdef void *ps
        if cell not in CELLS:
            raise ValueError(f"fastrnn core: unknown cell {cell!r}")
        L = len(w_ih)
        if L < 1 or len(w_hh) != L or len(b_ih) != L or len(b_hh) != L:
            raise ValueError("fastrnn core: w_ih, w_hh, b_ih, b_hh need one array per layer")
        if batch < 1 or batch > (1 << 24):
            raise ValueError(f"batch_size must lie in [1, {1 << 24}], got {batch}")
        dtype = np.dtype(w_ih[0].dtype) if isinstance(w_ih[0], np.ndarray) else None
        self._tn = _typenum_of(dtype)
        G = fr_gates(CELLS[cell])
        if w_ih[0].ndim != 2 or w_ih[0].shape[0] > _INT_MAX or w_ih[0].shape[1] > _INT_MAX:
            raise ValueError("fastrnn core: w_ih[0] must be 2-D (gates * hidden, input)")
        GH, I = w_ih[0].shape
        if GH < 1 or GH % G:
            raise ValueError(f"fastrnn core: w_ih[0] must have shape (gates * hidden, input)")
        H = GH // G
        for k in range(L):
            _shape(w_ih[k], f'w_ih[{k}]', (GH, I if k == 0 else H))
            _shape(w_hh[k], f'w_hh[{k}]', (GH, H))
            _shape(b_ih[k], f'b_ih[{k}]', (GH,))
            _shape(b_hh[k], f'b_hh[{k}]', (GH,))
        M = 0
        if head_w is not None:
            M = _shape(head_w, 'head_w', (None, H))[0]
            _shape(head_b, 'head_b', (M,))
            if M < 1:
                raise ValueError("fastrnn core: the head needs at least one output")
        if (mean is None) != (scale is None):
            raise ValueError("fastrnn core: mean and scale go together")
        V = 0
        if emb is not None:
            if mean is not None:
                raise ValueError("fastrnn core: token input is not standardised")
            V = _shape(emb, 'emb', (None, I))[0] - 1
            if V < 1 or V >= _INT_MAX:
                raise ValueError("fastrnn core: emb needs V + 1 rows, V >= 1")
            _shape(known, 'known', (V,))
            if known.dtype != np.bool_ or not known.flags.c_contiguous:
                raise TypeError("fastrnn core: known must be a C-contiguous bool array")
            self._emb, self._known = emb, known
            self._pemb = _ptr(emb, 'emb', self._tn, (V + 1) * I, False)
            self._pknown = <const unsigned char*>cnp.PyArray_DATA(<cnp.ndarray>known)
        elif known is not None:
            raise ValueError("fastrnn core: known goes with emb")
        self.d.cell = CELLS[cell]
        self.d.layers = L
        self.d.batch = batch
        self.d.input = I
        self.d.hidden = H
        self.d.outputs = M
        self.d.chunk = chunk if chunk > 0 else batch
        self.d.scaled = 1 if mean is not None else 0
        self.d.vocab = V
        need = fr_stream_workspace(&self.d)
        if need == 0:
            raise ValueError("fastrnn core: stream sizes out of range")
        self.dtype = dtype
        self.cell, self.batch_size, self.n_inputs, self.hidden_size = cell, batch, I, H
        self.num_layers, self.n_outputs, self.tokens = L, M, V > 0
        self._width = M if M else H
        self._ws = np.zeros(need, dtype=dtype)
        self._pws = _ptr(self._ws, 'ws', self._tn, need, True)
        self._out = np.zeros((batch, self._width), dtype=dtype)
        self._pout = _ptr(self._out, 'out', self._tn, batch * self._width, True)
        self._blas = 0 if (self._tn == cnp.NPY_FLOAT32 and fr_kernel_available()) else 1
        ptrs = <const void**>malloc(sizeof(void*) * 4 * L)
        if ptrs == NULL:
            raise MemoryError()
        try:
            for k in range(L):
                ptrs[k] = _ptr(w_ih[k], f'w_ih[{k}]', self._tn, GH * (I if k == 0 else H), False)
                ptrs[L + k] = _ptr(w_hh[k], f'w_hh[{k}]', self._tn, GH * H, False)
                ptrs[2 * L + k] = _ptr(b_ih[k], f'b_ih[{k}]', self._tn, GH, False)
                ptrs[3 * L + k] = _ptr(b_hh[k], f'b_hh[{k}]', self._tn, GH, False)
            phw = _ptr(head_w, 'head_w', self._tn, M * H, False, True)
            phb = _ptr(head_b, 'head_b', self._tn, M, False, True)
            pm = _ptr(mean, 'mean', self._tn, I, False, True)
            ps = _ptr(scale, 'scale', self._tn, I, False, True)
            if self._tn == cnp.NPY_FLOAT32:
                rc = fr_stream_init_f32(&self.d, <float*>self._pws, <const float *const *>ptrs,
                                        <const float *const *>(ptrs + L),
                                        <const float *const *>(ptrs + 2 * L),
                                        <const float *const *>(ptrs + 3 * L),
                                        <const float*>phw, <const float*>phb,
                                        <const float*>pm, <const float*>ps)
            else:
                rc = fr_stream_init_f64(&self.d, <double*>self._pws, <const double *const *>ptrs,
                                        <const double *const *>(ptrs + L),
                                        <const double *const *>(ptrs + 2 * L),
                                        <const double *const *>(ptrs + 3 * L),
                                        <const double*>phw, <const double*>phb,
                                        <const double*>pm, <const double*>ps)
        finally:
            free(ptrs)
        if rc != 0:
            raise ValueError("fastrnn core: invalid stream sizes")
        self._zeros = np.zeros((L, batch, H), dtype=dtype)

    cdef object _input(self, object x, int K):
        """x as a C-contiguous array the C step may read: (B, K, I) floats of the dtype
        or (B, K) int64 ids (K == 0: one step, x is (B, I) / (B,))."""
        cdef tuple want
        cdef object B = self.batch_size, I = self.n_inputs
        arr = np.asarray(x)
        kind = arr.dtype.kind
        one = K == 0
        if self.tokens:
            if kind not in "iu":
                raise TypeError(f"token ids must be integers, got dtype {arr.dtype}")
            want = (B,) if one else (B, K)
            if arr.shape != want and not (one and arr.shape == (B, 1)):
                raise ValueError(f"token ids must have shape {want} (batch_size"
                                 f"{'' if one else ', steps'}), got {arr.shape}")
            if kind == "u" and arr.size and arr.max() > 2 ** 63 - 1:
                raise ValueError("token ids above 2**63 - 1")
            return np.ascontiguousarray(arr, dtype=np.int64)
        if kind not in "fiu":
            raise TypeError(f"x must hold real numbers, got dtype {arr.dtype}")
        want = (B, I) if one else (B, K, I)
        if arr.shape != want:
            if one and arr.ndim == 1 and ((B == 1 and arr.shape[0] == I)
                                          or (I == 1 and arr.shape[0] == B)):
                arr = arr.reshape(want)
            elif not one and I == 1 and arr.shape == (B, K):
                arr = arr.reshape(want)
            else:
                raise ValueError(f"x must have shape {want} (batch_size, "
                                 f"{'' if one else 'steps, '}n_features), got {arr.shape}")
        return np.ascontiguousarray(arr, dtype=self.dtype)

    cdef int _run(self, object x, int K, int every, void *pout) except -1:
        cdef const void *px = NULL
        cdef const long long *pid = NULL
        cdef int rc
        cdef cnp.ndarray a = <cnp.ndarray>x
        if self.tokens:
            pid = <const long long*>cnp.PyArray_DATA(a)
        else:
            px = cnp.PyArray_DATA(a)
        if self._busy:
            raise RuntimeError("this stream is in use by another thread: make one stream "
                               "per thread (streams over one model may run concurrently)")
        self._busy = 1
        if self._blas:
            _blas_hold_one()
        if self._tn == cnp.NPY_FLOAT32:
            with nogil:
                rc = fr_stream_step_f32(&self.d, <float*>self._pws, K, <const float*>px, pid,
                                        <const float*>self._pemb, self._pknown, every,
                                        <float*>pout, <fr_sgemm_t>sgemm)
        else:
            with nogil:
                rc = fr_stream_step_f64(&self.d, <double*>self._pws, K, <const double*>px,
                                        pid, <const double*>self._pemb, self._pknown, every,
                                        <double*>pout, <fr_dgemm_t>dgemm)
        if self._blas:
            _blas_restore()
        self._busy = 0
        if rc == 2:
            raise ValueError("token ids must be >= 0" if self.tokens else
                             "x contains NaN or infinity")
        if rc != 0:
            raise ValueError("fastrnn core: invalid stream call")
        return 0

    def step(self, x, bint copy=False):
        cdef cnp.ndarray a
        cdef bint fast = False
        if type(x) is np.ndarray:
            a = <cnp.ndarray>x
            if self.tokens:
                fast = (cnp.PyArray_TYPE(a) == cnp.NPY_INT64 and cnp.PyArray_NDIM(a) == 1
                        and cnp.PyArray_DIM(a, 0) == self.batch_size
                        and cnp.PyArray_IS_C_CONTIGUOUS(a))
            else:
                fast = (cnp.PyArray_TYPE(a) == self._tn and cnp.PyArray_NDIM(a) == 2
                        and cnp.PyArray_DIM(a, 0) == self.batch_size
                        and cnp.PyArray_DIM(a, 1) == self.n_inputs
                        and cnp.PyArray_IS_C_CONTIGUOUS(a))
        if not fast:
            x = self._input(x, 0)
        self._run(x, 1, 0, self._pout)
        return self._out.copy() if copy else self._out

    def step_many(self, X, bint every=True):
        cdef int K
        arr = np.asarray(X)
        if arr.ndim < 2:
            raise ValueError(f"X must have shape (batch_size, steps"
                             f"{'' if self.tokens else ', n_features'}), got {arr.shape}")
        if arr.shape[1] < 1 or arr.shape[1] > _INT_MAX:
            raise ValueError(f"X must hold at least one step, got shape {arr.shape}")
        K = arr.shape[1]
        x = self._input(arr, K)
        if not every:
            self._run(x, K, 0, self._pout)
            return self._out
        out = np.empty((self.batch_size, K, self._width), dtype=self.dtype)
        self._run(x, K, 1, cnp.PyArray_DATA(<cnp.ndarray>out))
        return out

    def get_state(self):
        """(h, c) for LSTM, else h: new (num_layers, batch_size, hidden_size) arrays."""
        h = np.empty_like(self._zeros)
        c = np.empty_like(self._zeros) if self.cell == 'lstm' else None
        self._state(h, c, 0)
        return (h, c) if c is not None else h

    def set_state(self, h, c=None):
        """Write the state: h (and c for LSTM) of shape (num_layers, batch_size,
        hidden_size), finite; nothing is changed when either is refused."""
        lstm = self.cell == 'lstm'
        if lstm and c is None:
            raise ValueError("an LSTM state needs both h and c")
        if not lstm and c is not None:
            raise ValueError(f"c is only for LSTM; a {self.cell} stream has no cell state")
        shape = self._zeros.shape
        arrs = []
        for v, name in ((h, 'h'), (c, 'c')):
            if v is None:
                arrs.append(None)
                continue
            a = np.asarray(v)
            if a.dtype.kind not in "fiu":
                raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
            if a.shape != shape:
                raise ValueError(f"{name} must have shape {shape} (num_layers, batch_size, "
                                 f"hidden_size), got {a.shape}")
            a = np.ascontiguousarray(a, dtype=self.dtype)
            if not np.isfinite(a).all():
                raise ValueError(f"{name} contains NaN or infinity")
            arrs.append(a)
        self._state(arrs[0], arrs[1], 1)

    def reset(self):
        """Back to the zero state (the state predict starts every sequence from)."""
        self._state(self._zeros, self._zeros if self.cell == 'lstm' else None, 1)

    cdef int _state(self, h, c, int write) except -1:
        cdef Py_ssize_t n = self._zeros.size
        cdef void *ph = _ptr(h, 'h', self._tn, n, not write)
        cdef void *pc = _ptr(c, 'c', self._tn, n, not write, True)
        if self._busy:
            raise RuntimeError("this stream is in use by another thread")
        if self._tn == cnp.NPY_FLOAT32:
            fr_stream_state_f32(&self.d, <float*>self._pws, <float*>ph, <float*>pc, write)
        else:
            fr_stream_state_f64(&self.d, <double*>self._pws, <double*>ph, <double*>pc, write)
        return 0

    def __reduce__(self):
        raise TypeError("a Stream holds running state and is not picklable; make a new one "
                        "from the model")

# ================================================================ bfloat16 inference
# (src_c/bf16.c, bf16.h): the products in bf16 on AVX512_BF16, the rest float32.

cdef extern from "bf16.h" nogil:
    int fr_bf16_available()
    int fr_bf16_cpu()
    size_t fr_bf16_workspace(const fr_dims *d)
    size_t fr_bf16_weight_cache_size(const fr_dims *d)
    int fr_bf16_splits_as_one_chunk(const fr_dims *d)
    int fr_forward_bf16_avx512bf16(const fr_dims *d, float *out, float *h_n, float *c_n,
                                   const float *x, const int *lengths, const float *h0,
                                   const float *c0, const float *w_ih, const float *w_hh,
                                   const float *b_ih, const float *b_hh, float *ws,
                                   float *cache)
    void fr_bf16_round_avx512bf16(unsigned short *dst, const float *src, size_t n)
    int fr_bf16_matmul_avx512bf16(int m, int n, int k, const float *a, int lda,
                                  const float *w, int ldw, float *c, int ldc)


def bf16_available():
    """True when bf16 inference runs here: the CPU has AVX512_BF16 (and AVX-512F) and
    neither FASTRNN_PORTABLE nor FASTRNN_NO_BF16 was set when fastrnn was imported."""
    return bool(fr_bf16_available())


def bf16_cpu():
    """True when the CPU has AVX512_BF16 and AVX-512F, whatever the environment says."""
    return bool(fr_bf16_cpu())


def bf16_workspace_size(str cell, int batch, int steps, int input_size, int hidden,
                        bint reverse, int n_threads, int chunk, bint batch_first=False):
    """Workspace of forward_bf16 in float32 elements."""
    cdef fr_dims d = _dims(cell, batch, steps, input_size, hidden, reverse, n_threads, chunk,
                           hidden, batch_first)
    return fr_bf16_workspace(&d)


def bf16_weight_cache_size(str cell, int input_size, int hidden):
    """Elements (float32) of forward_bf16's packed-weight cache of one layer-direction:
    depends on the cell and sizes only."""
    cdef fr_dims d = _dims(cell, 1, 1, input_size, hidden, False, 1, 1, hidden)
    return fr_bf16_weight_cache_size(&d)


def forward_bf16(str cell, bint reverse, int n_threads, int chunk, out, Py_ssize_t col,
                 h_n, c_n, x, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, ws,
                 bint batch_first=False, wcache=None):
    """One layer-direction inference forward with bf16 products (as forward, float32
    buffers only, no training buffers). Needs bf16_available(). wcache: the
    layer-direction's packed-weight cache (bf16_weight_cache_size(...) float32 elements,
    zeroed when made, one per calling thread), or None."""
    if not fr_bf16_available():
        raise RuntimeError("fastrnn core: bf16 inference is not available on this CPU/setup")
    cdef _fwd_ptrs p
    cdef fr_dims d = _forward_args(&p, cell, reverse, n_threads, chunk, cnp.NPY_FLOAT32, out,
                                   col, h_n, c_n, x, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh,
                                   batch_first)
    cdef size_t need = fr_bf16_workspace(&d)
    if need == 0:
        raise MemoryError("fastrnn core: workspace size overflows")
    cdef void *pws = _ptr(ws, 'ws', cnp.NPY_FLOAT32, need, True)
    cdef void *pwc = NULL
    if wcache is not None:
        pwc = _ptr(wcache, 'wcache', cnp.NPY_FLOAT32, fr_bf16_weight_cache_size(&d), True)
    cdef int rc
    _quiet_idle_pools()       # no BLAS here, but idle OpenBLAS pools spin on our cores
    with nogil:
        rc = fr_forward_bf16_avx512bf16(&d, <float*>p.out, <float*>p.h_n, <float*>p.c_n,
                                        <const float*>p.x, p.lengths, <const float*>p.h0,
                                        <const float*>p.c0, <const float*>p.w_ih,
                                        <const float*>p.w_hh, <const float*>p.b_ih,
                                        <const float*>p.b_hh, <float*>pws, <float*>pwc)
    if rc != 0:
        raise ValueError("fastrnn core: invalid sizes or lengths")


def bf16_round(x):
    """The bf16 bits (uint16) of float32 x, rounded to nearest even by the core's own
    conversion (denormals to signed zero): for the tests. Needs bf16_available()."""
    if not fr_bf16_available():
        raise RuntimeError("fastrnn core: bf16 is not available on this CPU/setup")
    a = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty(a.shape, dtype=np.uint16)
    cdef Py_ssize_t n = a.size
    if n:
        fr_bf16_round_avx512bf16(<unsigned short*>cnp.PyArray_DATA(<cnp.ndarray>out),
                                 <const float*>cnp.PyArray_DATA(<cnp.ndarray>a), n)
    return out


def bf16_matmul(a, w):
    """bf16(a) (m, k) @ bf16(w)^T (n, k) -> float32 (m, n) with the core's kernel: for
    the tests. Needs bf16_available()."""
    if not fr_bf16_available():
        raise RuntimeError("fastrnn core: bf16 is not available on this CPU/setup")
    A = np.ascontiguousarray(a, dtype=np.float32)
    W = np.ascontiguousarray(w, dtype=np.float32)
    if A.ndim != 2 or W.ndim != 2 or A.shape[1] != W.shape[1] or min(A.shape + W.shape) < 1 \
            or max(A.shape + W.shape) > _INT_MAX:
        raise ValueError("bf16_matmul: a (m, k) and w (n, k), non-empty")
    cdef int m = A.shape[0], n = W.shape[0], k = A.shape[1]
    C = np.empty((m, n), dtype=np.float32)
    if fr_bf16_matmul_avx512bf16(m, n, k, <const float*>cnp.PyArray_DATA(<cnp.ndarray>A), k,
                                 <const float*>cnp.PyArray_DATA(<cnp.ndarray>W), k,
                                 <float*>cnp.PyArray_DATA(<cnp.ndarray>C), n) != 0:
        raise MemoryError("bf16_matmul: out of memory")
    return C
