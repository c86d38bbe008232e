#!/usr/bin/env bash
# `make bench`: runs bulkhead-bench against the local system and draws its charts.
#
#   1. a venv with a pinned matplotlib under ~/.cache/bulkhead (made once, first, so that a
#      missing Python fails before anything is measured);
#   2. builds bulkhead-controller, bulkhead-node-agent and bulkhead-bench in
#      BULKHEAD_BENCH_PROFILE (release by default; `debug` for a quick look);
#   3. starts the local system with those binaries (up.sh, BULKHEAD_PROFILE) unless one is
#      already running on BULKHEAD_STATE_DIR, in which case the running binaries are
#      measured (the report names them); a system this script started is stopped again;
#   4. runs bulkhead-bench (every step bounded in count and time; about 10–15 minutes on 2
#      CPUs; item 5 runs e2e/hack/demo-patched.sh --rounds N) and writes $BULKHEAD_BENCH_OUT (default target/bench): report.md, results.json
#      and the PNG charts.
#
# Extra arguments go to `bulkhead-bench run` (e.g. --starts 20 --steps 1000 --only start).
# BULKHEAD_BENCH_NOTE adds a note to the top of the report (e.g. "machine shared with builds").
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
log() { printf '[bench] %s\n' "$*" >&2; }

state="${BULKHEAD_STATE_DIR:-$root/.bulkhead}"
out="${BULKHEAD_BENCH_OUT:-$root/target/bench}"
profile="${BULKHEAD_BENCH_PROFILE:-release}"
case "$profile" in
  release) cargo_profile=(--release) ;;
  debug) cargo_profile=() ;;
  *) log "BULKHEAD_BENCH_PROFILE must be release or debug, not $profile"; exit 1 ;;
esac
cache="${BULKHEAD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bulkhead}"
mpl_version=3.9.2
venv="$cache/bench-venv-mpl$mpl_version"

if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
  log "creating $venv (matplotlib $mpl_version from PyPI)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "matplotlib==$mpl_version"
fi

log "building ($profile)"
cargo build "${cargo_profile[@]}" -p bulkhead-controller -p bulkhead-node-agent -p bulkhead-bench
# Item 5 runs e2e/hack/demo-patched.sh, whose client and plugin are the debug builds.
cargo build -p bulkhead-e2e --bin bulkhead-traffic -p kubectl-bulkhead
target="${CARGO_TARGET_DIR:-$root/target}/$profile"

# The benchmark runs up.sh again (its client checks the system; the tuned kcm baseline has up.sh
# start the local kube-controller-manager again): with this profile it builds nothing more.
export BULKHEAD_PROFILE="$profile"
started=0
if [[ -f "$state/kubeconfig" ]] && kubectl --kubeconfig "$state/kubeconfig" get --raw /readyz >/dev/null 2>&1; then
  log "a local system runs on $state: measuring the binaries it runs (see the report)"
else
  started=1
  trap 'bash e2e/hack/down.sh' EXIT
  bash e2e/hack/up.sh
fi

BULKHEAD_BIN_DIR="$(bash e2e/hack/tools.sh --print-bin-dir)"
export BULKHEAD_BIN_DIR
mkdir -p "$out"
rm -f "$out"/*.png "$out/report.md" "$out/results.json"
t0=$SECONDS
# A bound on the whole run beyond the bounds of each step.
timeout --foreground 2400 "$target/bulkhead-bench" run --out "$out" "$@"
"$venv/bin/python" bench/charts.py "$out"
log "done in $((SECONDS - t0)) s: $out/report.md"
if [[ $started -eq 1 ]]; then
  log "stopping the local system this script started"
fi
