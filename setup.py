"""Build fastrnn: one Cython extension (fastrnn/_core.pyx) compiled with the C core (src_c/).

OpenMP is used when the compiler accepts -fopenmp; otherwise the core builds and runs
single-threaded. Flags are portable: no -march=native (a wheel must run on any x86-64)
and no -ffast-math (it would flip the whole process into flush-to-zero on load).
FASTRNN_SANITIZE=1 builds with AddressSanitizer + UndefinedBehaviorSanitizer;
FASTRNN_OPENMP=0 builds without OpenMP, as a compiler without it would.

Every build also writes fastrnn/_build_info.py (compiler, flags, OpenMP, build-time
versions), read by fastrnn.show_config(); it goes into the wheel, never into git.
"""
import os
import platform
import subprocess
import sys
import sysconfig
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.sdist import sdist
from setuptools.modified import newer_group

C_SOURCES = ["src_c/recurrence.c", "src_c/lstm.c", "src_c/gru.c", "src_c/rnn.c",
             "src_c/kernels.c", "src_c/vmath.c", "src_c/dense.c", "src_c/xent.c",
             "src_c/embedding.c", "src_c/stream.c", "src_c/bf16.c", "src_c/optim.c"]
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
        # FASTRNN_OPENMP=0 builds as a compiler without OpenMP would (tests the fallback)
        openmp = os.environ.get("FASTRNN_OPENMP", "1") != "0" and \
            _compiler_accepts(self.compiler, ["-fopenmp"])
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
            ext.define_macros = list(ext.define_macros) + [
                ("FASTRNN_OPENMP", "1" if openmp else "0"),
                ("FASTRNN_CFLAGS", '"%s"' % " ".join(cflags))]
            ext.fastrnn_build = dict(openmp=openmp, sanitize=sanitize, cflags=cflags,
                                     ldflags=lflags)
        super().build_extensions()

    def build_extension(self, ext):
        # the info describes the compiled module: rewrite it only when that is rebuilt
        target = self.get_ext_fullpath(ext.name)
        info_path = os.path.join(os.path.dirname(target), "_build_info.py")
        rebuilt = self.force or newer_group(list(ext.sources) + list(ext.depends), target)
        super().build_extension(ext)
        if rebuilt or not os.path.exists(info_path):
            self._write_build_info(info_path, ext.fastrnn_build)

    def copy_extensions_to_source(self):
        # --inplace: setuptools builds in build_lib and copies the module; copy its info too
        super().copy_extensions_to_source()
        build_py = self.get_finalized_command("build_py")
        for ext in self.extensions:
            inplace_file, regular_file = self._get_inplace_equivalent(build_py, ext)
            info = os.path.join(os.path.dirname(regular_file), "_build_info.py")
            if os.path.exists(info):
                self.copy_file(info, os.path.join(os.path.dirname(inplace_file),
                                                  "_build_info.py"), level=self.verbose)

    def _write_build_info(self, path, build):
        """fastrnn/_build_info.py beside the compiled module (so it lands in the wheel)."""
        info = {
            "compiler": _compiler_version(self.compiler),
            "compile_command": " ".join(getattr(self.compiler, "compiler_so", []) or []),
            "cflags": build["cflags"],
            "ldflags": build["ldflags"],
            "openmp": build["openmp"],
            "sanitize": build["sanitize"],
            "platform": sysconfig.get_platform(),
            "python": platform.python_version(),
            "build_versions": _module_versions(["Cython", "numpy", "scipy", "setuptools"]),
        }
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write('"""How this copy of fastrnn was compiled. Written by setup.py; '
                    'do not edit."""\n')
            for key, value in info.items():
                f.write(f"{key} = {value!r}\n")


class SDist(sdist):
    def make_release_tree(self, base_dir, files):
        # the build info describes one compiled module; an sdist must not carry a stale one
        files = [f for f in files if os.path.basename(f) != "_build_info.py"]
        super().make_release_tree(base_dir, files)


def _compiler_version(compiler):
    """First line of `<cc> --version`, or the compiler's name when that fails."""
    cmd = (getattr(compiler, "compiler_so", None) or ["cc"])[:1]
    try:
        out = subprocess.run(cmd + ["--version"], capture_output=True, text=True, timeout=30)
        return out.stdout.splitlines()[0].strip()
    except Exception:
        return cmd[0]


def _module_versions(names):
    from importlib import metadata
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def extensions():
    import numpy
    from Cython.Build import cythonize

    ext = Extension(
        "fastrnn._core",
        sources=["fastrnn/_core.pyx"] + C_SOURCES,
        include_dirs=["src_c", numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        depends=["src_c/fastrnn.h", "src_c/instantiate.h", "src_c/cells.h", "src_c/mathfn.h",
                 "src_c/kernels.h", "src_c/threads.h", "src_c/bf16.h", "src_c/optim.h",
                 "src_c/layout.h", "src_c/sync.h"],
    )
    return cythonize([ext], language_level=3)


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt, "sdist": SDist})
