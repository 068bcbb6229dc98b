#!/bin/sh
# Runs the request_head fuzz target for a bounded time, starting from the
# committed seeds, and exits non-zero if libFuzzer finds a crash, a property
# violation (a panic), a hang or an out-of-memory input.
#
# Usage: fuzz/ci.sh            (from anywhere; 60 s of fuzzing)
#        FUZZ_SECONDS=600 fuzz/ci.sh
#
# Needs rustup with a nightly toolchain (cargo-fuzz builds with sanitizer
# flags only nightly accepts). cargo-fuzz is installed if it is missing.

set -eu

seconds="${FUZZ_SECONDS:-60}"
toolchain="${FUZZ_TOOLCHAIN:-nightly}"

# The repository root, whatever the current folder.
cd "$(dirname "$0")/.."

if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
    echo "fuzz/ci.sh: the $toolchain toolchain is missing; install it with" >&2
    echo "  rustup toolchain install $toolchain" >&2
    exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/ci.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked || cargo install cargo-fuzz
fi

# The working corpus is ignored by git; the seeds are read, never written.
mkdir -p fuzz/corpus/request_head

# -timeout: one input taking over 10 s is a hang, reported as a failure.
# -rss_limit_mb: the target needs well under 1 GiB (ASan included).
started=$(mktemp)
trap 'rm -f "$started"' EXIT
status=0
cargo +"$toolchain" fuzz run request_head \
    fuzz/corpus/request_head fuzz/seeds/request_head -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 || status=$?

if [ "$status" -ne 0 ]; then
    echo "fuzz/ci.sh: request_head failed (exit status $status)." >&2
    find fuzz/artifacts/request_head -type f -newer "$started" 2>/dev/null |
        while read -r input; do
            echo "  reproduce: cargo +$toolchain fuzz run request_head $input" >&2
        done
    exit 1
fi
echo "fuzz/ci.sh: request_head ran $seconds s without a failure"
