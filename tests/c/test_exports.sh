#!/bin/sh
# The shared library exports exactly the public API: every defined dynamic
# symbol starts with tc_ (none with the internal tc__), and every function
# the public headers declare with TC_EXTERN is exported.
#
# usage: test_exports.sh NM LIBTWINCORE_SO INCLUDE_DIR
set -eu

nm_prog=$1
lib=$2
incdir=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$nm_prog" -D --defined-only "$lib" | awk 'NF >= 3 { print $3 }' |
    sed 's/@.*//' | sort -u >"$tmp/exported"

status=0
if ! grep -q '^tc_loop_new$' "$tmp/exported"; then
    echo "no tc_loop_new among the exports of $lib: is it the right file?"
    status=1
fi

# Linker-made markers some toolchains put in the dynamic table.
grep -v -e '^tc_' "$tmp/exported" |
    grep -v -x -e _init -e _fini -e _edata -e _end -e __bss_start \
        >"$tmp/foreign" || true
if [ -s "$tmp/foreign" ]; then
    echo "exported symbols without the tc_ prefix:"
    sed 's/^/  /' "$tmp/foreign"
    status=1
fi

grep '^tc__' "$tmp/exported" >"$tmp/internal" || true
if [ -s "$tmp/internal" ]; then
    echo "internal tc__ symbols exported:"
    sed 's/^/  /' "$tmp/internal"
    status=1
fi

# Declarations keep the name on the TC_EXTERN line (STYLE.md section 2).
cat "$incdir"/twincore.h "$incdir"/twincore/*.h |
    grep 'TC_EXTERN' | grep -v '#define' |
    sed -n 's/.*[ *]\(tc_[a-z0-9_]*\)[ ]*(.*/\1/p' | sort -u >"$tmp/declared"
if [ ! -s "$tmp/declared" ]; then
    echo "found no TC_EXTERN declarations under $incdir"
    status=1
fi
comm -23 "$tmp/declared" "$tmp/exported" >"$tmp/missing"
if [ -s "$tmp/missing" ]; then
    echo "declared in the public headers but not exported:"
    sed 's/^/  /' "$tmp/missing"
    status=1
fi

if [ "$status" -eq 0 ]; then
    echo "$(wc -l <"$tmp/exported") symbols exported, all tc_;" \
        "$(wc -l <"$tmp/declared") declared, all exported"
fi
exit "$status"
