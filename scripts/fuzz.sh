#!/usr/bin/env bash
# Coverage-guided fuzzing of every decoder of bytes Mneme did not write in this process:
# WAL frames and recovery, the manifest, logged entries (decoded, then applied), agent
# snapshots, both graph snapshot formats, JSON Lines imports, and the request path (raw
# protobuf bytes and structure-aware requests). cargo-fuzz on stable Rust
# (--sanitizer none: libFuzzer with SanitizerCoverage, no ASan — the code is safe Rust).
#
#   scripts/fuzz.sh [seconds per target]      # CI runs 20; a longer run: 3600
#
# Crashes land in fuzz/artifacts/<target>/; the corpus grows in fuzz/corpus/<target>/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECONDS_PER_TARGET="${1:-20}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
cargo fuzz build --sanitizer none
for target in wal manifest entry agent_snapshot native_graph hnsw_graph export_jsonl request; do
  echo "fuzzing $target for ${SECONDS_PER_TARGET}s"
  cargo fuzz run --sanitizer none "$target" -- \
    -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -print_final_stats=1 2>&1 \
    | grep -E '^(Done|stat::number_of_executed_units|SUMMARY)|panicked at|crash-' || true
  if ls "artifacts/$target"/crash-* >/dev/null 2>&1; then
    echo "fuzz target $target found a crash: fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
