#!/usr/bin/env bash
# The whole check, exactly what CI runs (.ci/run): dependencies, formatting,
# lints, then every test (integration tests start their own redis-server).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

for component in fmt clippy; do
    if ! cargo "$component" --version >/dev/null 2>&1; then
        echo "test.sh: 'cargo $component' is missing: rustup component add ${component/fmt/rustfmt}" >&2
        exit 1
    fi
done

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# The proxy's behaviour tests run once per pool mode within this one pass
# (`both_modes!` in tests/common/mod.rs).
cargo test --workspace
# What the build left on disk (CI machines have little to spare).
du -sh "${CARGO_TARGET_DIR:-target}" 2>/dev/null || true
