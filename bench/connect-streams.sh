#!/usr/bin/env bash
# Throughput of `kubelan connect` by number of concurrent streams, with the host's TCP
# memory (issue 19: 1 000 bulk flows; tcp_mem pressure), on the peer harness's topology
# held with one method (`run.sh --hold`):
#
#   sudo bench/connect-streams.sh <kubelan release build> [METHOD]   # default kubelan-connect
#
# Steps, all from pb-lap to the pod 10.211.0.2 through the method: iperf3 one stream up and
# down (-t 5); 8 iperf3 clients at once (ports 5202..5209, -P 1, -t 10), up and down; then
# 1 000 streams split across clients (CS_SPLITS, clients x streams per client, default
# "8x125 40x25"; at most 100 clients: ports 5202-5301), up and down; and last the 8 clients
# again, up and down. Before each multi-client step the script waits (at most 30 s) until
# the host's TCP memory is back near where it started, so a step does not run under the
# memory the one before left in flight. Each 1 000-stream figure is compared with the
# median of the 8-client steps of the same run, all of which are printed: when they differ
# by more than a few percent the machine was not steady (use CS_ROUNDS).
# iperf3 3.12 serves all streams of one process from one select() loop, whose cost per
# byte grows with the streams per process: at 125, iperf3 took a quarter of this 2-vCPU
# machine, 9-14 points of it select's own work (sock_poll, fdget, tcp_poll, wait-queue
# locks; docs/benchmarks.md, session 18), CPU the measured method does not get. Compare
# like with like, and with the kernel path's own ratios on the same generator (METHOD
# `direct`: routing and MASQUERADE, no kubelan; 0.64-0.69 as 8 x 125 and 0.80-0.86 as
# 40 x 25 on our 2-vCPU machines, but 1.11-1.18 as 100 x 10: the kernel itself does not
# lose at 1 000 flows), or METHOD `relay-floor` (two HAProxy relays, no crypto, no mux:
# what terminating TCP twice in user space keeps at 1 000 flows). For the multi-client steps it prints the aggregate (sum of the
# clients' receiver sides) and the peak of the host's TCP memory (/proc/net/sockstat
# `mem`, sampled each second; tcp_mem's pressure mark is the middle value of
# /proc/sys/net/ipv4/tcp_mem). Quicker than bench/connect-load.sh's scale step (no ladder,
# no kernel control), for before/after comparisons of one change: run it for both builds
# one after the other, alternating.
# CS_EXTRA="100x10 ..." adds splits to CS_SPLITS (the older name; both are read).
# CS_IPERF="-w 128K" adds words to every multi-client iperf3 command (e.g. fixed socket
# buffers for the applications' own sockets, whose send queues otherwise grow with the
# host's congestion control: about 1.5 MB per bulk sender under BBR), or "-C cubic" (the
# namespaces inherit the machine's default congestion control, BBR on some of ours, and
# may not change it: cubic is then allowed per socket only).
# CS_ROUNDS=N (default 1) repeats the 8-flow step and the splits N times, then measures 8
# flows once more: the ratios are of medians, for a machine whose speed drifts.
# Everything is bounded (timeouts on every client and server); the harness is stopped by
# SIGINT to its process group and its namespaces removed on exit.
set -uo pipefail
BIN=${1:?usage: connect-streams.sh <kubelan binary> [METHOD]}
METHOD=${2:-kubelan-connect}
# shellcheck source=harness.inc
source "$(dirname "${BASH_SOURCE[0]}")/harness.inc"
pb_preflight iperf3 jq ip setsid timeout
TMP=$(mktemp -d /tmp/connect-streams.XXXXXX)
cd "$PB_DIR" || exit 1
POD_IP=10.211.0.2 HOST=10.211.0.2 PORT_ADD=0
if [ "$METHOD" = relay-floor ]; then
  # Two HAProxy relays, the floor of any design that terminates TCP twice: the laptop's
  # clients dial 127.0.0.1:1xxxx, which the method maps to the pod's port xxxx.
  export RF_PORTS=5202-5301
  HOST=127.0.0.1 PORT_ADD=10000
fi
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
one() { # LABEL [iperf3 args]
  local label=$1; shift
  ip netns exec pb-pod timeout 30 iperf3 -s -1 -B $POD_IP -p 5301 >/dev/null 2>&1 & local s=$!
  sleep 0.5
  ip netns exec pb-lap timeout 25 iperf3 -c $HOST -p $((5301 + PORT_ADD)) -t 5 "$@" -J >"$TMP/one.json" 2>&1
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
    # shellcheck disable=SC2086 # CS_IPERF: extra words for every client
    ip netns exec pb-lap timeout 40 iperf3 -c $HOST -p $((p + PORT_ADD)) -P "$per" -t 10 ${CS_IPERF:-} "$@" -J >"$TMP/c-$p.json" 2>&1 & pids+=($!)
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
tcp_pages() { awk '/^TCP:/{print $NF}' /proc/net/sockstat; }
BASE_MEM=$(tcp_pages)
settle() { # waits (<= 30 s) until the TCP memory is within 8 MB of where the run started
  local _
  for _ in $(seq 30); do
    [ "$(tcp_pages)" -le $((BASE_MEM + 2048)) ] && return
    sleep 1
  done
  echo "  (TCP memory still at $(($(tcp_pages) * 4 / 1024)) MB after 30 s)"
}
SPLITS="${CS_SPLITS-8x125 40x25} ${CS_EXTRA:-}"
for split in $SPLITS; do
  c=${split%x*} per=${split#*x}
  [[ $c =~ ^[0-9]+$ && $per =~ ^[0-9]+$ ]] && [ "$c" -ge 1 ] && [ "$c" -le 100 ] && [ "$per" -ge 1 ] ||
    { echo "CS_SPLITS: bad split $split (CLIENTSxSTREAMS, at most 100 clients)" >&2; exit 2; }
done
ROUNDS=${CS_ROUNDS:-1}
[[ $ROUNDS =~ ^[1-9][0-9]?$ ]] || { echo "CS_ROUNDS: a count from 1 to 99" >&2; exit 2; }
echo "connect-streams: $METHOD, $BIN, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) vCPU; $(ip netns exec pb-lap sysctl -n net.ipv4.tcp_congestion_control); tcp_mem $(cat /proc/sys/net/ipv4/tcp_mem); splits $SPLITS; $ROUNDS round(s)"
declare -A ALL # label -> every aggregate of it in this run, space-separated
step() { # LABEL CLIENTS STREAMS [iperf3 args]: settle, measure, keep the aggregate
  local label=$1; shift
  settle; many "$label" "$@"
  ALL[$label]="${ALL[$label]:-} ${AGG[$label]}"
}
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[++n] = $1 } END { if (!n) { print 0; exit }
  printf "%.2f", n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2 }'; }
one "1 up"; one "1 down" -R
# 8 flows before every round of splits and once more at the end, so each 1 000-flow figure
# has an 8-flow figure on either side of it.
for _ in $(seq "$ROUNDS"); do
  step "8 up" 8 1; step "8 down" 8 1 -R
  for split in $SPLITS; do
    c=${split%x*} per=${split#*x}
    step "$((c * per))/$c up" "$c" "$per"; step "$((c * per))/$c down" "$c" "$per" -R
  done
done
step "8 up" 8 1; step "8 down" 8 1 -R
for dir in up down; do
  AGG["8 $dir"]=$(median <<<"${ALL["8 $dir"]}")
  echo "8 $dir, every measurement:${ALL["8 $dir"]} Gbit/s; median ${AGG["8 $dir"]}"
done
for split in $SPLITS; do
  c=${split%x*} per=${split#*x} l="$((c * per))/$c"
  for dir in up down; do AGG["$l $dir"]=$(median <<<"${ALL["$l $dir"]}"); done
  echo "$l / 8 (medians of this run): up $(ratio "$l up" '8 up') (${ALL["$l up"]# }), down $(ratio "$l down" '8 down') (${ALL["$l down"]# })"
done
rm -rf "$TMP"
