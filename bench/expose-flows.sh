#!/usr/bin/env bash
# Many bulk flows through one `kubelan expose` session on the lab (the way back at scale:
# a pod-side load test against a developer's servers, or a replaced Service under load):
#
#   sudo bench/expose-flows.sh [FLOWS] [VIA]     # default 1000 flows, --via agent
#
# The laptop runs 8 iperf3 servers on 127.0.0.1:5201-5208, all exposed by one session
# (`kubelan expose 5201 ... 5208 --via VIA`, VIA = agent or port-forward). A client pod
# runs 8 iperf3 clients at once against the Service's ClusterIP, FLOWS/8 streams each,
# 15 s up (pod -> laptop), then 15 s down (-R). Printed per direction: the streams that
# ran, the aggregate throughput (sum of the receivers), and the peak resident memory of
# the relay pod's processes and of the laptop's `kubelan expose`, sampled each second
# (the relay pod's memory limit is 512Mi: crates/cluster/src/session_objects.rs).
# EF_SS=DIR saves `ss -tnmi` of the relay pod, the agent pod and the laptop 9 s into each
# direction there (where the bytes wait: socket queues, windows, drops).
# Everything is bounded in time; every process started is killed by PID on exit and the
# lab removed. Compare builds one after the other with KUBELAN_BIN.
set -euo pipefail
FLOWS=${1:-1000}
VIA=${2:-agent}
PER=$((FLOWS / 8))
cd "$(dirname "$0")/.."
BIN=${KUBELAN_BIN:-$PWD/target/release/kubelan}
[ -x "$BIN" ] || { echo "build first: cargo build --release --locked -p kubelan" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "needs root (the lab)" >&2; exit 1; }
[ "$PER" -ge 1 ] && [ "$PER" -le 128 ] || { echo "FLOWS must be 8..1024 (iperf3 takes at most 128 streams per client)" >&2; exit 1; }
case $VIA in agent | port-forward) ;; *) echo "VIA is agent or port-forward" >&2; exit 1 ;; esac
for t in iperf3 kubectl jq; do command -v $t >/dev/null || { echo "needs $t" >&2; exit 1; }; done

LAB=exf$(($$ % 100000))
TMP=$(mktemp -d /tmp/kubelan-exflows.XXXXXX)
chmod 755 "$TMP"
SPAWN_SECS=1800
# shellcheck source=lab.inc
source "$(dirname "${BASH_SOURCE[0]}")/lab.inc"
lab_start

PORTS=$(seq 5201 5208 | tr '\n' ' ')
for p in $PORTS; do spawn laptop "iperf3-$p" iperf3 -s -B 127.0.0.1 -p "$p"; done
on laptop kubelan install >"$TMP/install.log" 2>&1
# shellcheck disable=SC2086
spawn laptop expose kubelan expose $PORTS --name bx --via "$VIA"
wait_for "expose --via $VIA" 120 grep -q '^serving ' "$TMP/expose.log"
k apply -f - >/dev/null <<EOF2
apiVersion: v1
kind: Pod
metadata: {name: benchclient}
spec:
  containers: [{name: client, image: debian, command: [sleep, "3600"]}]
EOF2
running() { [ "$(k get pod benchclient -o jsonpath='{.status.phase}')" = Running ]; }
wait_for "the client pod" 60 running
IP=$(k get service bx -o jsonpath='{.spec.clusterIP}')
netns_pids() { # lab target: the processes in its network namespace
  local ino d
  ino=$(on "$1" readlink /proc/self/ns/net)
  for d in /proc/[0-9]*; do
    if [ "$(readlink "$d/ns/net" 2>/dev/null)" = "$ino" ]; then echo "${d#/proc/}"; fi
  done | tr '\n' ' '
}
SEL=$(k get service bx -o jsonpath='{.spec.selector.kubelan\.io/session}')
RELAY=default/$(k get pods -l "kubelan.io/session=$SEL" -o jsonpath='{.items[0].metadata.name}')
AGENT=kubelan-system/$(k get pods -n kubelan-system -o jsonpath='{.items[0].metadata.name}')
RELAY_PIDS=$(netns_pids "$RELAY")
# The child of `timeout` in the expose wrapper: kubelan itself.
CLIENT_PID=$(awk '{print $1; exit}' /proc/"$(cat "$TMP/expose.pid")"/task/*/children 2>/dev/null || true)
rss_mb() { # pids...: resident memory, MB
  local p sum=0 v
  for p in "$@"; do
    v=$(awk '/^VmRSS/{print $2}' /proc/"$p"/status 2>/dev/null || true)
    sum=$((sum + ${v:-0}))
  done
  echo $((sum / 1024))
}
echo "relay pod $RELAY (pids $RELAY_PIDS), idle: $(rss_mb $RELAY_PIDS) MB; expose on the laptop (pid ${CLIENT_PID:-?}): $(rss_mb $CLIENT_PID) MB" >&2

step() { # label iperf3-flag
  local label=$1 dir=$2 clients=() peak=0 lpeak=0 r p c
  for p in $PORTS; do
    on default/benchclient iperf3 -c "$IP" -p "$p" -P "$PER" -t 15 $dir -J >"$TMP/c-$label-$p.json" 2>&1 &
    clients+=($!)
  done
  if [ -n "${EF_SS:-}" ]; then
    mkdir -p "$EF_SS"
    (sleep 9
     on "$RELAY" ss -tnmi >"$EF_SS/relay-$label.txt" 2>&1 || true
     on "$AGENT" ss -tnmi >"$EF_SS/agent-$label.txt" 2>&1 || true
     on laptop ss -tnmi >"$EF_SS/laptop-$label.txt" 2>&1 || true) &
  fi
  for _ in $(seq 20); do
    sleep 1
    r=$(rss_mb $RELAY_PIDS); [ "$r" -gt "$peak" ] && peak=$r
    r=$(rss_mb $CLIENT_PID); [ "$r" -gt "$lpeak" ] && lpeak=$r
  done
  for c in "${clients[@]}"; do wait "$c" || true; done
  local gbit streams
  gbit=$(for p in $PORTS; do jq -r '.end.sum_received.bits_per_second // 0' "$TMP/c-$label-$p.json" 2>/dev/null || echo 0; done |
    awk '{s += $1} END {printf "%.2f", s / 1e9}')
  streams=$(for p in $PORTS; do jq -r '.end.streams | length' "$TMP/c-$label-$p.json" 2>/dev/null || echo 0; done |
    awk '{s += $1} END {print s + 0}')
  echo "| $label | $VIA | $streams of $((PER * 8)) | $gbit | $peak | $lpeak |"
  sleep 3
}
echo "| direction | via | streams | Gbit/s | relay pod peak RSS MB | laptop expose peak RSS MB |"
echo "|---|---|---|---|---|---|"
step "pod→laptop" ""
step "laptop→pod" -R
