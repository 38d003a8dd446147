"""Build fastrnn: one Cython extension (fastrnn/_core.pyx) compiled with the C core (src_c/).

OpenMP is used when the compiler accepts -fopenmp; otherwise the core builds and runs
single-threaded. Flags are portable: no -march=native (a wheel must run on any x86-64)
and no -ffast-math (it would flip the whole process into flush-to-zero on load).
FASTRNN_SANITIZE=1 builds with AddressSanitizer + UndefinedBehaviorSanitizer.
"""
import os
import sys
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

C_SOURCES = ["src_c/recurrence.c", "src_c/lstm.c", "src_c/gru.c", "src_c/rnn.c",
             "src_c/kernels.c"]
BASE_FLAGS = ["-O3", "-std=gnu11", "-fno-trapping-math", "-fno-math-errno"]


def _compiler_accepts(compiler, flags):
    """True when `compiler` compiles and links a tiny OpenMP program with `flags`."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n")
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=flags)
            compiler.link_executable(objs, "probe", output_dir=tmp, extra_postargs=flags)
        except Exception:
            return False
    return True


class BuildExt(build_ext):
    def build_extensions(self):
        sanitize = os.environ.get("FASTRNN_SANITIZE", "") not in ("", "0")
        openmp = _compiler_accepts(self.compiler, ["-fopenmp"])
        if not openmp:
            print("fastrnn: compiler without OpenMP, building single-threaded", file=sys.stderr)
        for ext in self.extensions:
            cflags = list(BASE_FLAGS) + ["-fvisibility=hidden"]
            lflags = []
            if openmp:
                cflags.append("-fopenmp")
                lflags.append("-fopenmp")
            if sanitize:
                san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                       "-fno-sanitize-recover=undefined"]
                cflags = [f for f in cflags if f != "-O3"] + ["-O1", "-g"] + san
                lflags += san
            ext.extra_compile_args = cflags
            ext.extra_link_args = lflags
            ext.define_macros = [("FASTRNN_OPENMP", "1" if openmp else "0"),
                                 ("FASTRNN_CFLAGS", '"%s"' % " ".join(cflags))]
        super().build_extensions()


def extensions():
    from Cython.Build import cythonize

    ext = Extension(
        "fastrnn._core",
        sources=["fastrnn/_core.pyx"] + C_SOURCES,
        include_dirs=["src_c"],
        depends=["src_c/fastrnn.h", "src_c/instantiate.h", "src_c/cells.h", "src_c/mathfn.h",
                 "src_c/kernels.h"],
    )
    return cythonize([ext], language_level=3)


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
