#!/usr/bin/env bash
# Runs each fuzz target for SECONDS (default 30) from the committed seeds; new inputs go to
# fuzz/corpus (ignored by git), crashes to fuzz/artifacts. `make fuzz` runs this; `make test`
# runs it briefly when cargo-fuzz is installed. Crashes found become unit regression tests.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-30}"
# cargo-fuzz passes -Zsanitizer and friends: allow them on a stable toolchain.
export RUSTC_BOOTSTRAP=1
for target in image_reference image_manifest; do
	mkdir -p "corpus/$target"
	echo "fuzz: $target for ${seconds}s"
	cargo fuzz run "$target" "corpus/$target" "seeds/$target" -- \
		-max_total_time="$seconds" -rss_limit_mb=1024 -max_len=65536 -print_final_stats=1
done
