#!/usr/bin/env bash
# Runs each fuzz target for SECONDS (default 30) from the committed seeds; new inputs go to
# fuzz/corpus (ignored by git), crashes to fuzz/artifacts. `make fuzz` runs this; `make test`
# runs it briefly when cargo-fuzz is installed. Crashes found become unit regression tests.
#
# The instrumented build is slow (10+ minutes cold on 2 cores), so it lives outside the
# checkout, in the cache the other Go- and Rust-built tools use: a fresh clone on the same
# machine reuses it. `run.sh --built` succeeds when both targets are built.
set -euo pipefail
cd "$(dirname "$0")"
cache_root="${BULKHEAD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bulkhead}"
target_dir="$cache_root/fuzz-target"
targets=(image_reference image_manifest)
if [[ "${1:-}" == --built ]]; then
	cargo fuzz --version >/dev/null 2>&1 || exit 1
	for target in "${targets[@]}"; do
		[[ -x "$target_dir/x86_64-unknown-linux-gnu/release/$target" ]] || exit 1
	done
	exit 0
fi
seconds="${1:-30}"
if ! cargo fuzz --version >/dev/null 2>&1; then
	echo "fuzz: installing cargo-fuzz from crates.io (about 3 minutes)"
	cargo install --locked --quiet cargo-fuzz
fi
# cargo-fuzz passes -Zsanitizer and friends: allow them on a stable toolchain.
export RUSTC_BOOTSTRAP=1
for target in "${targets[@]}"; do
	mkdir -p "corpus/$target"
	echo "fuzz: $target for ${seconds}s"
	cargo fuzz run --target-dir "$target_dir" "$target" "corpus/$target" "seeds/$target" -- \
		-max_total_time="$seconds" -rss_limit_mb=1024 -max_len=65536 -print_final_stats=1
done
