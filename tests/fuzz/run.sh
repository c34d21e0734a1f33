#!/usr/bin/env bash
# Build the libFuzzer targets with Debian's clang and run each for a
# bounded time.
#
#   tests/fuzz/run.sh build              build every target into build-fuzz/
#   tests/fuzz/run.sh run TARGET [SECS]  fuzz TARGET for SECS seconds (60)
#   tests/fuzz/run.sh repro TARGET FILE  run one input (a saved crash)
#
# The library is compiled from src/*.c with -fsanitize=fuzzer-no-link,
# address,undefined (UB aborts), libev from Debian.  A run starts from the
# seed corpus in tests/fuzz/corpus/TARGET (read only) and keeps what it
# finds in build-fuzz/corpus/TARGET; a crash, a leak, a failed CHECK or an
# input slower than 20 s fails it and leaves the input in
# build-fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/../.."

OUT=build-fuzz
CC=${CC:-clang}
TARGETS=(${FUZZ_TARGETS:-fuzz_stream fuzz_udp fuzz_sockaddr})
SAN=(-fsanitize=address,undefined -fno-sanitize-recover=all)
CFLAGS=(-g -O1 -std=c11 -D_GNU_SOURCE -Iinclude -Isrc -Wall -Wextra
        -Wno-unused-parameter -fno-omit-frame-pointer)
LIBS=(-lev -lpthread)
if [ -f src/tls.c ]; then
    CFLAGS+=(-DTC_HAVE_TLS)
    LIBS+=(-lssl -lcrypto)
    if [ -z "${FUZZ_TARGETS:-}" ]; then
        TARGETS+=(fuzz_tls)
    fi
fi

build() {
    mkdir -p "$OUT/obj"
    # Flags changed (OpenSSL found or not): rebuild everything.
    local flags="$CC ${CFLAGS[*]} ${SAN[*]}"
    if [ "$(cat "$OUT/obj/flags" 2>/dev/null)" != "$flags" ]; then
        rm -f "$OUT"/obj/*.o
        printf '%s' "$flags" >"$OUT/obj/flags"
    fi
    local objs=()
    for src in src/*.c; do
        local obj="$OUT/obj/$(basename "${src%.c}").o"
        objs+=("$obj")
        if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] ||
           [ -n "$(find include src -newer "$obj" -name '*.h' | head -1)" ]; then
            echo "$CC -c $src"
            "$CC" "${CFLAGS[@]}" "${SAN[@]}" -fsanitize=fuzzer-no-link \
                -c "$src" -o "$obj"
        fi
    done
    for t in "${TARGETS[@]}"; do
        echo "$CC -o $OUT/$t"
        "$CC" "${CFLAGS[@]}" "${SAN[@]}" -fsanitize=fuzzer \
            "tests/fuzz/$t.c" "${objs[@]}" "${LIBS[@]}" -o "$OUT/$t"
    done
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

run() {
    local t=$1 secs=${2:-60}
    mkdir -p "$OUT/corpus/$t" "$OUT/artifacts"
    # -close_fd_mask=1: the targets' stdout noise stays out of the log.
    # A fixed seed (FUZZ_SEED, default 1) makes CI's runs repeatable; set
    # FUZZ_SEED=0 for a random one when exploring.
    "$OUT/$t" -seed="${FUZZ_SEED:-1}" -max_total_time="$secs" -timeout=20 \
        -rss_limit_mb=2048 \
        -max_len=4096 -print_final_stats=1 -close_fd_mask=1 \
        -artifact_prefix="$OUT/artifacts/$t-" \
        "$OUT/corpus/$t" "tests/fuzz/corpus/$t"
}

case "${1:-}" in
build) build ;;
run) run "$2" "${3:-60}" ;;
repro) "$OUT/$2" "$3" ;;
*)
    echo "usage: $0 build | run TARGET [SECS] | repro TARGET FILE" >&2
    exit 2
    ;;
esac
