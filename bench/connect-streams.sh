#!/usr/bin/env bash
# Throughput of `kubelan connect` by number of concurrent streams, with the host's TCP
# memory (issue 19: 1 000 bulk flows; tcp_mem pressure), on the peer harness's topology
# held with one method (`run.sh --hold`):
#
#   sudo bench/connect-streams.sh <kubelan release build> [METHOD]   # default kubelan-connect
#
# Steps, all from pb-lap to the pod 10.211.0.2 through the method: iperf3 one stream up and
# down (-t 5); 8 iperf3 clients at once (ports 5202..5209, -P 1, -t 10), up and down; the
# same 8 clients with -P 125 each (1 000 streams), up and down; 40 clients with -P 25 each
# (1 000 streams again, "1000/40"), up and down. iperf3 3.12 serves all streams of one
# process from one select() loop, whose cost per byte grows with the streams per process:
# at 125, iperf3 took a quarter of this 2-vCPU machine, 9-14 points of it select's own
# work (sock_poll, fdget, tcp_poll, wait-queue locks; docs/benchmarks.md, session 18), CPU
# the measured method does not get. Both rows are printed: compare like with like, and
# with the kernel path's own ratios on the same generator (METHOD `direct`: routing and
# MASQUERADE, no kubelan; 0.64-0.69 and 0.80-0.86 on our 2-vCPU machines, but 1.11-1.18
# as 100 x 10 with CS_EXTRA=100x10: the kernel itself does not lose at 1 000 flows). For the
# multi-client steps it prints the aggregate (sum of the clients' receiver sides) and the
# peak of the host's TCP memory (/proc/net/sockstat `mem`, sampled each second; tcp_mem's
# pressure mark is the middle value of /proc/sys/net/ipv4/tcp_mem). Quicker than bench/connect-load.sh's scale
# step (no ladder, no kernel control), for before/after comparisons of one change: run it
# for both builds one after the other.
# CS_EXTRA="100x10 ..." adds more splits (clients x streams per client, up to 100 clients).
# Everything is bounded (timeouts on every client and server); the harness is stopped by
# SIGINT to its process group and its namespaces removed on exit.
set -uo pipefail
BIN=${1:?usage: connect-streams.sh <kubelan binary> [METHOD]}
METHOD=${2:-kubelan-connect}
# shellcheck source=harness.inc
source "$(dirname "${BASH_SOURCE[0]}")/harness.inc"
pb_preflight iperf3 jq ip setsid timeout
TMP=$(mktemp -d /tmp/connect-streams.XXXXXX)
cd "$PB_DIR"
PB_EXTRA_METHODS="$REPO/bench/methods${PB_EXTRA_METHODS:+:$PB_EXTRA_METHODS}" KUBELAN_BIN=$BIN \
  setsid ./run.sh --hold "$METHOD" >"$TMP/hold.log" 2>&1 &
H=$!
cleanup() {
  kill -INT -- -"$H" 2>/dev/null; sleep 4; kill -TERM -- -"$H" 2>/dev/null; wait "$H" 2>/dev/null
  ./run.sh --cleanup >/dev/null 2>&1
}
trap cleanup EXIT
for _ in $(seq 120); do grep -q -i "holding\|Ctrl-C" "$TMP/hold.log" && break; sleep 1; done
grep -q -i "holding\|Ctrl-C" "$TMP/hold.log" || { echo "the method did not come up: $TMP/hold.log" >&2; exit 1; }
sleep 2
POD_IP=10.211.0.2
one() { # LABEL [iperf3 args]
  local label=$1; shift
  ip netns exec pb-pod timeout 30 iperf3 -s -1 -B $POD_IP -p 5301 >/dev/null 2>&1 & local s=$!
  sleep 0.5
  ip netns exec pb-lap timeout 25 iperf3 -c $POD_IP -p 5301 -t 5 "$@" -J >"$TMP/one.json" 2>&1
  wait $s
  printf '%-10s %6.2f Gbit/s\n' "$label" "$(jq -r '(.end.sum_received.bits_per_second // 0)/1e9' "$TMP/one.json")"
}
many() { # LABEL CLIENTS STREAMS_PER_CLIENT [iperf3 args]
  local label=$1 clients=$2 per=$3; shift 3
  local last=$((5201 + clients))
  local pids=() p peak=0 m
  for p in $(seq 5202 $last); do
    ip netns exec pb-pod timeout 60 iperf3 -s -1 -B $POD_IP -p $p >/dev/null 2>&1 & pids+=($!)
  done
  sleep 1
  for p in $(seq 5202 $last); do
    ip netns exec pb-lap timeout 40 iperf3 -c $POD_IP -p $p -P "$per" -t 10 "$@" -J >"$TMP/c-$p.json" 2>&1 & pids+=($!)
  done
  for _ in $(seq 10); do
    sleep 1
    m=$(awk '/^TCP:/{print $NF}' /proc/net/sockstat)
    [ "$m" -gt "$peak" ] && peak=$m
  done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  local agg
  agg=$(for p in $(seq 5202 $last); do jq -r '.end.sum_received.bits_per_second // 0' "$TMP/c-$p.json"; done | awk '{s+=$1} END{printf "%.2f", s/1e9}')
  printf '%-12s %6s Gbit/s  (peak TCP memory %d MB)\n' "$label" "$agg" $((peak * 4 / 1024))
  AGG[$label]=$agg
}
declare -A AGG
ratio() { # ratio LABEL_A LABEL_B: AGG[A] / AGG[B]
  awk -v a="${AGG[$1]:-0}" -v b="${AGG[$2]:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'
}
echo "connect-streams: $METHOD, $BIN, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) vCPU; tcp_mem $(cat /proc/sys/net/ipv4/tcp_mem)"
one "1 up"; one "1 down" -R
many "8 up" 8 1; many "8 down" 8 1 -R
many "1000 up" 8 125; many "1000 down" 8 125 -R
many "1000/40 up" 40 25; many "1000/40 down" 40 25 -R
echo "1000 / 8: up $(ratio '1000 up' '8 up'), down $(ratio '1000 down' '8 down');" \
  "1000/40 / 8: up $(ratio '1000/40 up' '8 up'), down $(ratio '1000/40 down' '8 down')"
# More splits of the 1 000 streams on request, e.g. CS_EXTRA="100x10" (clients x streams
# each; at most 100 clients: ports 5202-5301).
for split in ${CS_EXTRA:-}; do
  c=${split%x*} per=${split#*x}
  [ "$c" -ge 1 ] && [ "$c" -le 100 ] && [ "$per" -ge 1 ] || { echo "CS_EXTRA: bad split $split" >&2; continue; }
  many "$((c * per))/$c up" "$c" "$per"; many "$((c * per))/$c down" "$c" "$per" -R
  echo "$((c * per))/$c / 8: up $(ratio "$((c * per))/$c up" '8 up'), down $(ratio "$((c * per))/$c down" '8 down')"
done
rm -rf "$TMP"
