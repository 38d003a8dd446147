"""What this copy of fastrnn is and how it runs: ``fastrnn.show_config()``.

Build facts (compiler, flags, OpenMP at compile time, build-time versions) come from
fastrnn/_build_info.py, which setup.py writes at every build; run-time facts (threads,
the BLAS scipy uses, whether the CPU takes the AVX-512 code paths and bfloat16 inference,
which OpenMP runtime got loaded) are read when asked.
"""
import os
import platform
import sys

from . import __version__, _core
from ._threads import get_num_threads

__all__ = ["get_config", "show_config"]


def _build_info():
    try:
        from . import _build_info as info
    except ImportError:  # a build by an older setup.py
        return {"compiler": None, "compile_command": None, "cflags": None, "ldflags": None,
                "openmp": None, "sanitize": None, "platform": None, "python": None,
                "build_versions": {}}
    return {k: v for k, v in vars(info).items() if not k.startswith("_")}


def _scipy_blas():
    """(name, version, configuration line) of the BLAS scipy was built against."""
    import scipy
    try:
        deps = scipy.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return deps.get("name"), deps.get("version"), deps.get("openblas configuration")
    except Exception:  # old scipy without mode="dicts"
        return None, None, None


def _cpu_flags():
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _loaded_openmp():
    """Path of the OpenMP runtime mapped into this process (Linux; None elsewhere).
    A repaired wheel brings its own libgomp under fastrnn.libs/."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "libgomp" in line or "libomp" in line}
    except OSError:
        return None
    paths = sorted(p for p in paths if p.startswith("/"))
    return ", ".join(paths) if paths else None


def _threadpoolctl_status():
    """Whether threadpoolctl knows fastrnn's pool (see _threads.py), without importing it."""
    tpc = sys.modules.get("threadpoolctl")
    if tpc is None:
        return "not imported"
    ours = sys.modules.get(__package__ + "._threadpoolctl")
    if ours is not None and ours._registered_with is tpc:
        return "registered"
    return "not registered"


def get_config():
    """A dict of everything ``show_config`` prints."""
    import numpy
    import scipy
    build = _build_info()
    blas_name, blas_version, blas_config = _scipy_blas()
    flags = _cpu_flags()
    avx512 = "avx512f" in flags if flags else None
    from .layers import bf16_status
    bf16_on, bf16_why = bf16_status()
    return {
        "fastrnn": __version__,
        "location": os.path.dirname(os.path.abspath(__file__)),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "blas": {"name": blas_name, "version": blas_version, "config": blas_config,
                 "thread_control": _core.BLAS_THREADS_SYMBOL,
                 "threads_outside_calls": _core.blas_num_threads()},
        "openmp": {"enabled": _core.openmp_enabled(), "runtime": _loaded_openmp()},
        "threads": {"fastrnn": get_num_threads(), "openmp_default": _core.max_threads(),
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                    "threadpoolctl": _threadpoolctl_status()},
        "cpu": {"avx512f": avx512, "machine": platform.machine(),
                "avx512_paths": _core.avx512_paths(),
                "FASTRNN_PORTABLE": os.environ.get("FASTRNN_PORTABLE"),
                "avx512_bf16": ("avx512_bf16" in flags) if flags else _core.bf16_cpu(),
                "bf16_inference": bf16_on, "bf16_detail": bf16_why,
                "FASTRNN_NO_BF16": os.environ.get("FASTRNN_NO_BF16")},
        "build": build,
    }


def _yes_no(value):
    return {True: "yes", False: "no", None: "unknown"}[value]


def show_config(file=None):
    """Print the version, the BLAS scipy uses, OpenMP on/off, threads and the compiler
    flags fastrnn was built with (what ``python -m fastrnn info`` prints)."""
    file = sys.stdout if file is None else file
    c = get_config()
    b, blas, omp, thr = c["build"], c["blas"], c["openmp"], c["threads"]
    vers = b.get("build_versions") or {}
    built_with = ", ".join(f"{k} {v}" for k, v in vers.items() if v)
    if c["cpu"]["avx512_paths"]:
        kernels = "AVX-512 (cell math clones, vector activations, packed float32 kernels)"
    elif c["cpu"]["avx512f"] and c["cpu"]["FASTRNN_PORTABLE"]:
        kernels = ("portable (FASTRNN_PORTABLE is set: BLAS for every product, portable "
                   "activations; the cell loops still use their AVX-512 clones)")
    else:
        kernels = "baseline x86-64 (no AVX-512 on this CPU; BLAS for every product)"
    lines = [
        f"fastrnn {c['fastrnn']}  ({c['location']})",
        f"python      {c['python']} on {c['platform']}",
        f"numpy       {c['numpy']}",
        f"scipy       {c['scipy']}",
        f"BLAS        {' '.join(filter(None, [blas['name'] or 'unknown', blas['version']]))}"
        f" (scipy's cython_blas)",
        f"            {blas['config'] or ''}".rstrip(),
        f"            thread control: {blas['thread_control'] or 'unavailable'} "
        f"(held to 1 thread inside fastrnn calls)",
        f"OpenMP      {'on' if omp['enabled'] else 'off'}"
        + (f"  ({omp['runtime']})" if omp["runtime"] else ""),
        f"threads     {thr['fastrnn']} in force (set_num_threads or threadpool_limits; OpenMP "
        f"default {thr['openmp_default']}, OMP_NUM_THREADS={thr['OMP_NUM_THREADS'] or 'unset'})",
        "            threadpoolctl: " + {
            "registered": "fastrnn registered (threadpool_info lists it, threadpool_limits "
                          "sets it)",
            "not imported": "not imported (fastrnn registers when it is)",
            "not registered": "imported, fastrnn not registered (threadpoolctl < 3.2?)",
        }[thr["threadpoolctl"]],
        f"CPU paths   {kernels}",
        "bfloat16    " + (f"precision='bfloat16' inference: used ({c['cpu']['bf16_detail']})"
                          if c["cpu"]["bf16_inference"] else
                          f"precision='bfloat16' inference: NOT available, runs float32 "
                          f"({c['cpu']['bf16_detail']})"),
        f"compiler    {b.get('compiler') or 'unknown'}",
        f"cflags      {' '.join(b['cflags']) if b.get('cflags') else 'unknown'}"
        + (f"  (after Python's: {b['compile_command']})" if b.get("compile_command") else ""),
        f"build       {b.get('platform') or 'unknown'}, python {b.get('python') or '?'}"
        + (f", {built_with}" if built_with else "")
        + (", SANITIZERS ON" if b.get("sanitize") else ""),
    ]
    print("\n".join(line for line in lines if line.strip()), file=file)
