#!/usr/bin/env bash
# Measures `kubelan lab up` and `lab down` wall time and the lab's memory over N cycles.
# Usage: sudo bench/lab-lifecycle.sh [cycles] [kubelan binary]
# Prints one line per cycle and a summary (median, min, max); record the results in
# docs/benchmarks.md with date and machine.
set -euo pipefail
cycles=${1:-5}
K=${2:-target/release/kubelan}
name="bench$$"
[ -x "$K" ] || { echo "build first: cargo build --release --locked -p kubelan" >&2; exit 1; }
trap '"$K" lab down --name "$name" >/dev/null 2>&1 || true' EXIT
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
field() { grep -o "\"$1\": [0-9]*" | head -1 | awk '{print $2}'; }
results=()
for i in $(seq "$cycles"); do
  t=$(date +%s%N); "$K" lab up --name "$name" >/dev/null; up=$(ms "$t")
  sleep 2  # let the lab settle before measuring memory
  st=$("$K" lab status --name "$name" --output json)
  rss=$(echo "$st" | field total_rss_kib); procs=$(echo "$st" | field processes)
  drss=$(echo "$st" | tr -d '\n' | grep -o '"daemon": {[^}]*}' | field rss_kib)
  t=$(date +%s%N); "$K" lab down --name "$name" >/dev/null; down=$(ms "$t")
  echo "cycle $i: up ${up} ms, down ${down} ms, ${procs} lab processes ${rss} KiB RSS (daemon ${drss} KiB)"
  results+=("$up $down $rss $drss")
done
printf '%s\n' "${results[@]}" | awk '
  { for (c = 1; c <= 4; c++) v[c, NR] = $c }
  END {
    split("up (ms)|down (ms)|all lab processes RSS (KiB)|daemon RSS (KiB)", name, "|")
    for (c = 1; c <= 4; c++) {
      n = 0; for (r = 1; r <= NR; r++) a[++n] = v[c, r]
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
      med = (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
      printf "%-30s median %8.0f  min %8.0f  max %8.0f\n", name[c], med, a[1], a[n]
    }
  }'
