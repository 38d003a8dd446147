"""Refusing sizes that cannot work before anything is allocated.

Two limits apply to a call into the core:
  * the 32-bit integers of the Fortran BLAS interface (and of the core's row counts):
    steps * batch * gates * hidden must stay below 2**31 (`BLAS_INT_MAX`);
  * the memory the process can still get. A request far beyond it would either fail
    half-way through building a model or, under Linux's overcommit, succeed and get
    the process killed when the pages are touched; so a request larger than what is
    available is refused with a MemoryError naming the sizes that caused it.

Small requests (below `CHECK_ABOVE` bytes) are never checked: reading /proc costs
more than they do.
"""
import os

__all__ = ["BLAS_INT_MAX", "CHECK_ABOVE", "available_bytes", "check_memory", "format_bytes"]

BLAS_INT_MAX = 2 ** 31 - 1
CHECK_ABOVE = 64 << 20


def _meminfo_available():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _read_int(path):
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_available():
    """Room left under this process's cgroup (v2, else v1) memory limit, if any."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":                       # v2
            base = "/sys/fs/cgroup" + parts[2]
            limit = _read_int(os.path.join(base, "memory.max"))
            usage = _read_int(os.path.join(base, "memory.current"))
        elif "memory" in parts[1].split(","):                         # v1
            base = "/sys/fs/cgroup/memory" + parts[2]
            limit = _read_int(os.path.join(base, "memory.limit_in_bytes"))
            usage = _read_int(os.path.join(base, "memory.usage_in_bytes"))
        else:
            continue
        if limit is not None and usage is not None and limit < 1 << 60:
            return max(0, limit - usage)
    return None


def _rlimit_available():
    """Room left under RLIMIT_AS (ulimit -v), if set."""
    try:
        import resource
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return None
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return max(0, soft - int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    return soft


def available_bytes():
    """Bytes this process can still allocate (the tightest of free memory, the cgroup
    limit and RLIMIT_AS), or None when it cannot be told."""
    known = [v for v in (_meminfo_available(), _cgroup_available(), _rlimit_available())
             if v is not None]
    return min(known) if known else None


def format_bytes(n):
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024.0
    return f"{n:.1f} EiB"  # pragma: no cover


def check_memory(nbytes, what, hint=""):
    """Raise MemoryError when `what` needs more than the memory available now."""
    if nbytes < CHECK_ABOVE:
        return
    avail = available_bytes()
    if avail is not None and nbytes > avail:
        raise MemoryError(f"{what} needs {format_bytes(nbytes)} but only "
                          f"{format_bytes(avail)} of memory is available"
                          + (f"; {hint}" if hint else ""))
