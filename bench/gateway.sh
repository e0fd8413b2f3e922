#!/usr/bin/env bash
# Gateway benchmarks on the lab, each pair measured in the same run:
#   node mode   — pc1 → office-router → node1 running `kubelan gateway --mode node`
#                 vs the same path with plain routing (node1 forwards, nodes route back
#                 to the office; no kubelan): target ≥ 0.9×.
#   tunnel mode — pc1 → office-router → pc2 running `kubelan gateway --mode tunnel`
#                 vs `kubelan connect` on pc2 itself: target within 10 %.
# Each case: iperf3 -t 5 up and down (-R) to an iperf3 pod on node2, and the p50 of
# sequential HTTP requests (fresh connection each) to a web pod.
# Usage: sudo bench/gateway.sh [kubelan binary]   (release build recommended)
# Record the results in docs/benchmarks.md with date and machine.
set -euo pipefail
K=${1:-target/release/kubelan}
[ -x "$K" ] || { echo "build first: cargo build --release --locked -p kubelan" >&2; exit 1; }
K=$(realpath "$K")
name="bgw$$"
bg=()
inner=
cleanup() {
  if [ -n "$inner" ]; then kill "$inner" 2>/dev/null || true; fi
  for p in "${bg[@]}"; do kill "$p" 2>/dev/null || true; done
  "$K" lab down --name "$name" >/dev/null 2>&1 || true
}
trap cleanup EXIT
x() { local host=$1; shift; "$K" lab exec --name "$name" "$host" -- "$@"; }

"$K" lab up --name "$name" >/dev/null
x node1 kubelan install >/dev/null
x node1 sh -c 'cat <<YAML | kubectl apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: iperf, namespace: default}
spec:
  nodeName: node2
  containers: [{name: iperf, image: networkstatic/iperf3, command: [iperf3, -s]}]
YAML'
for _ in $(seq 60); do
  ip=$(x node1 kubectl get pod iperf -o jsonpath='{.status.podIP}' 2>/dev/null || true)
  [ -n "$ip" ] && x node1 sh -c "timeout 1 bash -c '</dev/tcp/$ip/5201'" 2>/dev/null && break
  sleep 0.5
done
[ -n "$ip" ] || { echo "iperf pod did not start" >&2; exit 1; }
web=$(x node1 kubectl get pods -l app=web -o jsonpath='{.items[0].status.podIP}')
echo "iperf3 pod $ip (node2), web pod $web"

# mbit HOST [-R]: one iperf3 stream, Mbit/s.
mbit() {
  local host=$1; shift
  x "$host" iperf3 -c "$ip" -t 5 -J "$@" | jq '.end.sum_received.bits_per_second / 1e6 | floor'
}
# p50 HOST: median ms of 100 sequential GETs.
p50() {
  x "$1" sh -c "for i in \$(seq 100); do curl -s -o /dev/null -w '%{time_total}\n' --max-time 3 http://$web/; done" |
    sort -n | awk '{a[NR]=$1} END {printf "%.2f", a[int((NR+1)/2)]*1000}'
}
measure() { # LABEL HOST
  printf '%-34s up %6s Mbit/s  down %6s Mbit/s  p50 %6s ms\n' "$1" "$(mbit "$2")" "$(mbit "$2" -R)" "$(p50 "$2")"
}
start() { # PATTERN HOST COMMAND...: in the background, until its output matches PATTERN
  local pattern=$1 host=$2; shift 2
  local log; log=$(mktemp)
  # `sh` prints its PID (the lab shares the PID namespace), then becomes the command.
  "$K" lab exec --name "$name" "$host" -- sh -c 'echo $$; exec "$@"' sh "$@" >"$log" 2>&1 &
  bg+=($!)
  for _ in $(seq 100); do grep -q "$pattern" "$log" && break; sleep 0.2; done
  grep -q "$pattern" "$log" || { cat "$log" >&2; return 1; }
  inner=$(head -1 "$log")
  sleep 1
}
stop() { # stops the last started command by its PID and waits until it has cleaned up
  kill "$inner" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$inner" 2>/dev/null || break; sleep 0.1; done
  wait "${bg[-1]}" 2>/dev/null || true
  unset 'bg[-1]'
}
route_office() { for p in 172.17.16.0/20 172.17.32.0/23; do x office-router ip route replace "$p" via "$1"; done; }

echo "== node mode vs plain routing (pc1 → office-router → node1) =="
route_office 10.4.7.11
measure "plain routing" pc1
start "gateway ready" node1 kubelan gateway --mode node --lan 172.16.0.0/18 --no-dns
measure "kubelan gateway --mode node" pc1
stop

echo "== tunnel mode (pc1 → pc2 gateway) vs connect on pc2 =="
start "✓ connected" pc2 kubelan connect --no-dns
measure "kubelan connect (pc2)" pc2
stop
route_office 172.16.1.12
start "✓ connected" pc2 kubelan gateway --mode tunnel --lan 172.16.0.0/18 --no-dns
measure "kubelan gateway --mode tunnel (pc1)" pc1
stop
