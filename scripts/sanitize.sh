#!/usr/bin/env bash
# Run the C core's tests under AddressSanitizer + UndefinedBehaviorSanitizer.
#
#   scripts/sanitize.sh [pytest args...]     # default: the core tests below
#
# The extension is built with FASTRNN_SANITIZE=1 (setup.py: -fsanitize=address,undefined,
# -fno-sanitize-recover=undefined, -O1 -g) in a throwaway copy of the work tree, so the
# normal in-place build and the installed package are left alone. CPython is not built
# with ASan, so the ASan runtime is preloaded (it must come first) and leak detection is
# off (the interpreter's own arenas would be reported). Any sanitizer report stops the
# run with a non-zero status (halt_on_error), and the log is scanned once more in case a
# report was printed by a process whose status got lost.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python}"
CC="${CC:-gcc}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# the default selection: the core against finite differences, the numpy reference and
# PyTorch (every cell, dtype, direction, length pattern and thread count), plus the
# robustness tests that drive bad sizes, random inputs, faults and concurrent calls
# into the core (without the RSS and joblib timing tests: ASan's quarantine and
# slowdown are what they would measure)
if [ "$#" -eq 0 ]; then
    set -- tests/test_layers.py tests/test_reference.py tests/test_robustness.py \
        tests/test_head_core.py tests/test_embedding.py tests/test_sequence_estimators.py \
        tests/test_tokens.py tests/test_bf16.py tests/test_bf16_small_batch.py tests/test_optim_native.py \
        tests/test_weight_cache.py tests/test_small_backward.py tests/test_train_fast_path.py -k "not rss and not joblib and not learns and not language and not generat"
fi

"$PY" -c "import Cython" 2> /dev/null || "$PY" -m pip install -q "Cython>=3.0"

# a clean copy: sources and tests, without build products or anyone's in-place module
mkdir "$TMP/src"
tar -C "$ROOT" -cf - --exclude=./.git --exclude=./build --exclude=./dist \
    --exclude='*.egg-info' --exclude='*.so' --exclude=__pycache__ \
    --exclude=./fastrnn/_core.c --exclude=./.pytest_cache --exclude=./.hypothesis \
    --exclude=./.benchmarks . | tar -C "$TMP/src" -xf -
cd "$TMP/src"

echo "sanitize: building with FASTRNN_SANITIZE=1 in $TMP/src" >&2
# -fno-wrapv: CPython's own CFLAGS carry -fwrapv, which defines signed overflow and so
# hides it from UBSan; the core must not rely on wrapping anyway.
CFLAGS="${CFLAGS:-} -fno-wrapv" FASTRNN_SANITIZE=1 \
    "$PY" setup.py -q build_ext --inplace --build-temp "$TMP/build" \
    > "$TMP/build.log" 2>&1 || { cat "$TMP/build.log" >&2; exit 1; }
SO="$(ls fastrnn/_core*.so)"
if ! ldd "$SO" | grep libasan > /dev/null; then
    echo "sanitize: $SO is not linked against libasan" >&2
    exit 1
fi

LIBASAN="$("$CC" -print-file-name=libasan.so)"
[ -e "$LIBASAN" ] || { echo "sanitize: libasan.so not found ($LIBASAN)" >&2; exit 1; }

export LD_PRELOAD="$LIBASAN"
# allocator_may_return_null: an impossible allocation is a MemoryError in Python (as
# without ASan), not an ASan abort; the tests check that such sizes are refused early.
# Reports go to files as well: pytest captures stderr, and a halted test process takes
# its captured output with it.
mkdir "$TMP/reports"
ASAN_OPTIONS="log_path=$TMP/reports/asan:detect_leaks=0:halt_on_error=1:exitcode=86"
ASAN_OPTIONS+=":allocator_may_return_null=1:strict_string_checks=1"
# detect_stack_use_after_return stays off: its fake stack frames are only 32-byte
# aligned, while GCC keeps the AVX-512 kernel's local zmm arrays at 64 bytes and writes
# them with aligned stores (vmovaps), which then fault: a tool artifact, not a bug.
ASAN_OPTIONS+=":check_initialization_order=1:detect_stack_use_after_return=0"
export ASAN_OPTIONS
export UBSAN_OPTIONS="log_path=$TMP/reports/ubsan:halt_on_error=1:print_stacktrace=1:exitcode=87"
export PYTHONPATH="$TMP/src"
export PYTHONDONTWRITEBYTECODE=1
# the tests must import this sanitized build, not an installed fastrnn
"$PY" -c "import fastrnn._core as c, sys; f = c.__file__; \
sys.exit(0 if f.startswith('$TMP/src') else 'sanitize: imported ' + f)"

echo "sanitize: pytest $*" >&2
start=$(date +%s)
set +e
# --capture=sys: C-level writes to stderr (UBSan ignores log_path) reach the log;
# no faulthandler: it would catch a SEGV first and re-raise it, hiding its address
"$PY" -m pytest -q -p no:cacheprovider -p no:faulthandler --capture=sys "$@" 2>&1 \
    | tee "$TMP/pytest.log"
status=${PIPESTATUS[0]}
set -e
echo "sanitize: pytest finished in $(( $(date +%s) - start )) s with status $status" >&2
if [ -n "$(ls -A "$TMP/reports")" ]; then
    cat "$TMP/reports"/* >&2
    echo "sanitize: FAILED: sanitizer report above" >&2
    exit 1
fi
if grep -qE "ERROR: AddressSanitizer|runtime error:|SUMMARY: (Address|UndefinedBehavior)Sanitizer" \
        "$TMP/pytest.log"; then
    echo "sanitize: FAILED: sanitizer report in the pytest output above" >&2
    exit 1
fi
if [ "$status" -ne 0 ]; then
    echo "sanitize: FAILED (pytest status $status; 86 = ASan report, 87 = UBSan report)" >&2
    exit "$status"
fi
echo "sanitize: OK, no AddressSanitizer/UndefinedBehaviorSanitizer report" >&2
