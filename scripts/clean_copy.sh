# Sourced by build_wheel.sh and check_wheel.sh.
# clean_copy ROOT DEST: the work tree's sources into DEST (created), without build
# products, caches or anyone's in-place compiled module.
clean_copy() {
    mkdir "$2"
    tar -C "$1" -cf - --exclude=./.git --exclude=./build --exclude=./dist \
        --exclude='*.egg-info' --exclude='*.so' --exclude=__pycache__ \
        --exclude=./fastrnn/_core.c --exclude=./fastrnn/_build_info.py \
        --exclude=./.pytest_cache --exclude=./.hypothesis --exclude=./.benchmarks . \
        | tar -C "$2" -xf -
}
