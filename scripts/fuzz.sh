#!/usr/bin/env bash
# Builds the libFuzzer targets (Fuzz/) with -sanitize=fuzzer,address and runs each for
# SECONDS (default 15). Crashes land in Fuzz/findings/TARGET/; copy each into
# Fuzz/corpus/TARGET/ (the regression corpus replayed by the tests) once fixed.
#   scripts/fuzz.sh [SECONDS] [TARGET...]      targets: frames bitrate agent-api config controller
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-15}"; shift || true
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(frames bitrate agent-api config controller)
export SWIFT_BACKTRACE=enable=no
status=0
for t in "${targets[@]}"; do
  swift build --scratch-path .build-fuzz --product "fuzz-$t" -Xswiftc -DFUZZING -Xswiftc -sanitize=fuzzer,address >/dev/null
  bin=".build-fuzz/debug/fuzz-$t"
  work="$(mktemp -d)"; cp "Fuzz/corpus/$t/"* "$work/"
  mkdir -p "Fuzz/findings/$t"
  echo "fuzz-$t: ${seconds}s"
  # TOMLKit's parser leaks about 1.6 KB per parse (docs/HARDENING.md): the controller parses
  # once, so leaks are not findings for the config target.
  leaks=1; [ "$t" = config ] && leaks=0
  # Frames up to the production limit (64 KiB) and a little beyond it, from the start
  # (libFuzzer otherwise grows inputs slowly: 634 bytes after 200 s).
  maxlen=8192; lenctl=100; [ "$t" = frames ] && { maxlen=70000; lenctl=0; }
  # (LeakSanitizer's report at exit too: TOMLKit's leak is known, see above.)
  export ASAN_OPTIONS="detect_leaks=$leaks"
  if ! "$bin" -max_total_time="$seconds" -max_len=$maxlen -len_control=$lenctl -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -detect_leaks=$leaks \
        -artifact_prefix="Fuzz/findings/$t/" "$work" 2>"$work.log"; then
    status=1; echo "fuzz-$t: FOUND A CRASH (see Fuzz/findings/$t/)"; tail -40 "$work.log"
  fi
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb|cov:" "$work.log" | tail -3 | sed "s/^/  /"
  rm -rf "$work" "$work.log"
done
exit $status
