#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (default 60 s each).
# Needs nightly and cargo-fuzz; see fuzz/README.md. Exit status 0 when no
# target found a crash.
#
#   scripts/fuzz.sh        # 60 s per target
#   scripts/fuzz.sh 600    # 10 min per target
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: needs a nightly toolchain and cargo-fuzz:" >&2
    echo "  rustup toolchain install nightly && cargo install cargo-fuzz" >&2
    exit 1
fi
for target in resp_decoder session_commands; do
    echo "fuzz.sh: $target for ${seconds}s" >&2
    cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" -timeout=5
done
