#!/usr/bin/env bash
# One entry point for people and CI:
#   scripts/dev.sh setup   install what is missing (apt-get), configure, build
#   scripts/dev.sh demo    setup, then run the main demo
#   scripts/dev.sh test    setup, then every test: the normal build, the
#                          Python suite on 3.12 and 3.13 where found, an
#                          ASan+UBSan build and a ThreadSanitizer build
#   scripts/dev.sh bench   setup, then bench/run.py --quick
# Debian's own python3 is named explicitly: the first python3 on PATH may be
# another build without Debian's packages.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=/usr/bin/python3
PKGS=(meson ninja-build pkg-config gcc libc6-dev libev-dev libcmocka-dev
      libssl-dev openssl python3 python3-dev python3-pytest python3-mesonpy
      libuv1-dev python3-uvloop python3-twisted python3-gevent
      python3-matplotlib binutils procps util-linux clang
      libclang-rt-14-dev curl socat netcat-openbsd python3-distributed)

install_missing() {
    local missing=()
    for p in "${PKGS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
            grep -q "install ok installed" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "== installing: ${missing[*]}"
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y \
            --no-install-recommends "${missing[@]}"
    fi
}

# configure DIR [meson options...]; CONFIGURE_PY names another Python.
configure() {
    local dir=$1 py=${CONFIGURE_PY:-$PY}
    shift
    if [ -f "$dir/build.ninja" ]; then
        meson setup --reconfigure "$dir" -Dpython="$py" "$@" >/dev/null
    else
        meson setup "$dir" -Dpython="$py" "$@"
    fi
    ninja -C "$dir"
}

# The Python suite runs on 3.11 (Debian's, the normal build) and on each of
# these found here (pyenv's builds), each in its own build dir.
EXTRA_PYTHONS=(3.12 3.13)

# find_python VER: the newest pyenv build of VER, else pythonVER in
# /usr/local/bin or /usr/bin; prints nothing when there is none.
find_python() {
    local v=$1 full p
    if command -v pyenv >/dev/null 2>&1; then
        full=$(pyenv versions --bare 2>/dev/null |
               grep -E "^${v//./\\.}\.[0-9]+$" | sort -V | tail -n1)
        if [ -n "$full" ]; then
            p="$(pyenv prefix "$full")/bin/python$v"
            if [ -x "$p" ]; then
                echo "$p"
                return
            fi
        fi
    fi
    for p in "/usr/local/bin/python$v" "/usr/bin/python$v"; do
        if [ -x "$p" ]; then
            echo "$p"
            return 0
        fi
    done
    return 0    # none: not an error (set -e)
}

# python_venv VER PYTHON: a venv of PYTHON that sees Debian's packages, so
# meson 1.0 finds distutils (3.12 removed it; setuptools' shim comes in
# with distutils-precedence.pth) and pytest imports.  Prints its python.
python_venv() {
    local v=$1 python=$2 dir="build-venv-py${1/./}"
    if [ ! -x "$dir/bin/python3" ]; then
        "$python" -m venv --without-pip "$dir" >&2 || return 1
    fi
    local site
    site=$("$dir/bin/python3" -c \
        'import sysconfig; print(sysconfig.get_path("purelib"))') || return 1
    echo "import site; site.addsitedir('/usr/lib/python3/dist-packages')" \
        > "$site/debian-dist-packages.pth" || return 1
    echo "$PWD/$dir/bin/python3"
}

# The Python suite on one more interpreter: its own build of the extension
# (no C tests, no benchmarks), then meson test --suite python.
extra_python() {
    local v=$1 python venv dir="build-py${1/./}"
    python=$(find_python "$v")
    if [ -z "$python" ]; then
        echo "-- Python $v: not found here (pyenv or python$v), suite not run"
        return 0
    fi
    echo "== Python $v suite ($python)"
    if ! venv=$(python_venv "$v" "$python"); then
        run_check "Python $v: venv" false
        return 0
    fi
    if ! CONFIGURE_PY=$venv configure "$dir" -Dtests=false \
            -Dpython_tests=true -Dbench=false; then
        run_check "Python $v: build" false
        return 0
    fi
    run_suite "$dir" --suite python
}

extra_pythons() {
    local v
    for v in "${EXTRA_PYTHONS[@]}"; do
        extra_python "$v"
    done
}

setup() {
    install_missing
    configure build
}

PASSED=0
FAILED=0
TIMES=()
# timed NAME CMD...: runs CMD and notes how long the stage took.
timed() {
    local name=$1 t0=$SECONDS
    shift
    "$@"
    TIMES+=("$(printf '%-34s %4d s' "$name" $((SECONDS - t0)))")
}
# run_check NAME CMD...: one test in the tally, passed when CMD exits 0;
# CHECK_OK tells the caller which.
CHECK_OK=false
run_check() {
    local name=$1
    shift
    if "$@"; then
        PASSED=$((PASSED + 1))
        CHECK_OK=true
        echo "-- $name: ok"
    else
        FAILED=$((FAILED + 1))
        CHECK_OK=false
        echo "-- $name: FAILED"
    fi
}
# run_suite DIR [meson test args...]: runs, tallies, never exits early.
run_suite() {
    local dir=$1
    shift
    local log
    log=$(mktemp)
    local rc=0
    meson test -C "$dir" --print-errorlogs "$@" 2>&1 | tee "$log" || rc=$?
    local ok fail
    ok=$(awk '/^Ok:/ {print $2}' "$log" | tail -n1)
    fail=$(awk '/^(Fail|Timeout|Unexpected Pass):/ {s += $2} END {print s+0}' "$log")
    PASSED=$((PASSED + ${ok:-0}))
    FAILED=$((FAILED + fail))
    if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then
        FAILED=$((FAILED + 1))   # meson itself failed
    fi
    rm -f "$log"
}

asan_c() {
    configure build-asan -Db_sanitize=address,undefined -Db_lundef=false \
        -Dbench=false -Dpython_ext=false
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        run_suite build-asan --suite c --timeout-multiplier=3
}

tsan_c() {
    configure build-tsan -Db_sanitize=thread -Db_lundef=false -Dbench=false \
        -Dpython_ext=false
    TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$PWD/tests/c/tsan.supp" \
        run_suite build-tsan --suite c --timeout-multiplier=3
}

# The pytest suite against an extension (and library) built with ASan and
# UBSan.  CPython itself is not instrumented, so libasan is preloaded, and
# leak detection is off: the interpreter keeps memory until exit by design
# and LSan would report it.  Overflows, use-after-free and UB still abort.
# allocator_may_return_null: a huge allocation is a MemoryError, as without
# ASan (tests/python/test_faults.py asks for 4 EiB on purpose).
# PYTHONMALLOC=malloc: Python objects come from malloc, not pymalloc's
# arenas, so ASan sees a freed object used again; a small quarantine keeps
# the leak tests' RSS checks meaningful.
asan_python() {
    configure build-asan-py -Db_sanitize=address,undefined -Db_lundef=false \
        -Dbench=false
    LD_PRELOAD="$(gcc -print-file-name=libasan.so)" PYTHONMALLOC=malloc \
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:allocator_may_return_null=1:quarantine_size_mb=16 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        run_suite build-asan-py --suite python
}

# libFuzzer targets (tests/fuzz/README.md), each fuzzed for a bounded time;
# a crash, leak or failed check fails it.
FUZZ_SECONDS=(fuzz_stream:60 fuzz_udp:60 fuzz_sockaddr:30)
if [ -f src/tls.c ]; then
    FUZZ_SECONDS+=(fuzz_tls:60)
fi
fuzz() {
    run_check "fuzz: build" bash tests/fuzz/run.sh build
    "$CHECK_OK" || return 0
    local t
    for t in "${FUZZ_SECONDS[@]}"; do
        run_check "fuzz: ${t%%:*} for ${t##*:} s" \
            bash tests/fuzz/run.sh run "${t%%:*}" "${t##*:}"
    done
}

# Twisted's own ReactorBuilder suites (12 modules of twisted.internet.test)
# on twincore's reactor: as the builders' reactor, then also as trial's
# global one (tests/twisted/run_conformance.py says what passes).
twisted_conformance() {
    run_check "Twisted conformance (builder reactor)" env \
        PYTHONPATH="$PWD/build/pymod" "$PY" tests/twisted/run_conformance.py
    run_check "Twisted conformance (global reactor)" env \
        PYTHONPATH="$PWD/build/pymod" "$PY" tests/twisted/run_conformance.py \
        --global
}

# Many misbehaving clients against a Python server on twincore for a
# bounded time (tests/chaos/soak.py says what it checks).
chaos() {
    run_check "chaos soak" env PYTHONPATH="$PWD/build/pymod" \
        "$PY" tests/chaos/soak.py --seconds 60
}

run_tests() {
    echo "== normal build"
    timed "normal build (C + Python)" run_suite build
    timed "Python ${EXTRA_PYTHONS[*]} suites" extra_pythons
    echo "== ASan + UBSan build"
    timed "ASan + UBSan (C)" asan_c
    echo "== ThreadSanitizer build"
    timed "ThreadSanitizer (C)" tsan_c
    echo "== Python suite, ASan + UBSan extension"
    timed "ASan + UBSan (Python suite)" asan_python
    echo "== Twisted conformance"
    timed "Twisted conformance" twisted_conformance
    echo "== fuzzing"
    timed "libFuzzer targets" fuzz
    echo "== chaos soak"
    timed "chaos soak" chaos
    echo
    printf '%s\n' "${TIMES[@]}"
    echo "all builds: $PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
}

run_demo() {
    PYTHONPATH="$PWD/build/pymod" exec "$PY" examples/python/demo.py
}

case "${1:-}" in
setup) setup ;;
demo) setup && run_demo ;;
test) setup && run_tests ;;
bench) setup && "$PY" bench/run.py --quick ;;
*)
    echo "usage: $0 setup|demo|test|bench" >&2
    exit 2
    ;;
esac
