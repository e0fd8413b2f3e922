#!/usr/bin/env bash
# `kubelan forward` on the lab, against a plain socat relay over the same lab path, in the
# same run.
#
#   sudo bench/forward.sh [ROUNDS]          # default 2 rounds, methods alternate
#
# Both methods serve the laptop (which reaches only node addresses and the API server) on
# 127.0.0.1, and end in the same two pods (a web pod chosen by the forward, and an iperf3
# pod):
#
#   forward: client ─ kubelan forward (laptop) ══ TLS + WebSocket, WAN, edge router ══
#            API server on node1 (the lab's simulator) ─ pod (dialled inside the pod)
#   socat:   client ─ socat (laptop) ── TCP, WAN, edge router ── socat on node1 ─ pod IP
#
# socat runs twice: with its defaults (a process forked per connection at each relay, 8 KiB
# buffers) and with `-b 131072`, so throughput compares relays rather than buffer sizes.
# Same hops and a userspace relay at both ends; what the baseline lacks is what a
# port-forward adds: TLS, WebSocket framing, the API server's authentication and one
# upgrade per connection. (A relay on a node is also what a user without the API would
# need: a NodePort and a node that is reachable.)
#
# Measured per method: HTTP latency (pbclient lat: fresh connection per GET, p50/p99),
# connections/s (pbclient rate, 8 concurrent clients, 5 s), throughput (iperf3 -t 5, up
# and down), and the TCP connections the laptop opens for a burst of 100 concurrent local
# connections (/proc/net/snmp ActiveOpens, minus the clients' own 100): API connections
# for the forward, relay connections for socat. Everything is bounded in time and removed
# on exit (the lab too).
set -euo pipefail
ROUNDS=${1:-2}
cd "$(dirname "$0")/.."
BIN=${KUBELAN_BIN:-$PWD/target/release/kubelan}
PBSRC=${PBCLIENT_SRC:-$PWD/../shared/bench/tools/pbclient.rs}
[ -x "$BIN" ] || { echo "build first: cargo build --release --locked -p kubelan" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "needs root (the lab)" >&2; exit 1; }
for t in socat iperf3 rustc python3 kubectl; do
  command -v $t >/dev/null || { echo "needs $t" >&2; exit 1; }
done
[ -f "$PBSRC" ] || { echo "needs pbclient.rs (PBCLIENT_SRC=...)" >&2; exit 1; }

LAB=fwb$(( $$ % 100000 ))
TMP=$(mktemp -d /tmp/kubelan-fwbench.XXXXXX)
chmod 755 "$TMP"
# shellcheck source=lab.inc
source "$(dirname "${BASH_SOURCE[0]}")/lab.inc"

rustc --edition 2021 -O -o "$TMP/pbclient" "$PBSRC"
PB=$TMP/pbclient
lab_start

k apply -f - >/dev/null <<'EOF'
apiVersion: v1
kind: Pod
metadata: {name: iperf, labels: {app: iperf}}
spec:
  containers:
    - name: iperf
      image: networkstatic/iperf3
      command: [iperf3, -s, -p, "5201"]
      ports: [{containerPort: 5201}]
EOF
pod_ip() { k get pod "$1" -o jsonpath='{.status.podIP}'; }
wait_for "the iperf3 pod" 60 sh -c "[ -n \"\$(kubectl --kubeconfig $KC get pod iperf -o jsonpath='{.status.podIP}')\" ]"
sleep 1

# The forward.
spawn laptop forward kubelan forward svc/web 18080:80 pod/iperf 15201:5201 -o json
wait_for "the forward" 30 grep -q '"event":"ready"' "$TMP/forward.log"
wait_for "the forward's pod" 10 grep -q '"event":"backend","forward":"svc/web"' "$TMP/forward.log"
WEB_POD=$(grep '"event":"backend","forward":"svc/web"' "$TMP/forward.log" | tail -1 |
  python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["pod"])')
WEB_IP=$(pod_ip "$WEB_POD")
IPERF_IP=$(pod_ip iperf)

# The socat relays, to the same pods.
spawn node1 socat-n1-web socat TCP-LISTEN:28080,bind=10.4.7.11,fork,reuseaddr,backlog=4096 "TCP:$WEB_IP:80"
spawn node1 socat-n1-iperf socat TCP-LISTEN:25201,bind=10.4.7.11,fork,reuseaddr,backlog=4096 "TCP:$IPERF_IP:5201"
spawn laptop socat-lap-web socat TCP-LISTEN:38080,bind=127.0.0.1,fork,reuseaddr,backlog=4096 TCP:10.4.7.11:28080
spawn laptop socat-lap-iperf socat TCP-LISTEN:35201,bind=127.0.0.1,fork,reuseaddr,backlog=4096 TCP:10.4.7.11:25201
# The same with 128 KiB buffers (socat's default is 8 KiB), so throughput compares relays,
# not buffer sizes.
spawn node1 socat-n1-web-big socat -b 131072 TCP-LISTEN:28081,bind=10.4.7.11,fork,reuseaddr,backlog=4096 "TCP:$WEB_IP:80"
spawn node1 socat-n1-iperf-big socat -b 131072 TCP-LISTEN:25202,bind=10.4.7.11,fork,reuseaddr,backlog=4096 "TCP:$IPERF_IP:5201"
spawn laptop socat-lap-web-big socat -b 131072 TCP-LISTEN:38081,bind=127.0.0.1,fork,reuseaddr,backlog=4096 TCP:10.4.7.11:28081
spawn laptop socat-lap-iperf-big socat -b 131072 TCP-LISTEN:35202,bind=127.0.0.1,fork,reuseaddr,backlog=4096 TCP:10.4.7.11:25202
wait_for "the socat path" 10 on laptop curl -sf -m 2 -o /dev/null http://127.0.0.1:38080/
wait_for "the socat path (128 KiB)" 10 on laptop curl -sf -m 2 -o /dev/null http://127.0.0.1:38081/
on laptop curl -sf -m 5 -o /dev/null http://127.0.0.1:18080/

active_opens() { on laptop awk '/^Tcp:/ {n++; if (n==1) {for (i=1;i<=NF;i++) if ($i=="ActiveOpens") c=i} else print $c}' /proc/net/snmp; }

measure() { # method http_port iperf_port
  local m=$1 hp=$2 ip=$3 out
  out=$TMP/$m-$r
  on laptop "$PB" lat 127.0.0.1 "$hp" --n 200 --max-secs 60 >"$out.lat"
  on laptop "$PB" rate 127.0.0.1 "$hp" --n 20000 --secs 5 --conc 8 >"$out.rate"
  sleep 1
  local a b
  a=$(active_opens)
  on laptop "$PB" rate 127.0.0.1 "$hp" --n 100 --secs 30 --conc 100 >"$out.burst"
  b=$(active_opens)
  echo $((b - a - 100)) >"$out.opens"
  on laptop iperf3 -c 127.0.0.1 -p "$ip" -t 5 -J >"$out.up" || echo '{}' >"$out.up"
  sleep 1
  on laptop iperf3 -c 127.0.0.1 -p "$ip" -t 5 -R -J >"$out.down" || echo '{}' >"$out.down"
  sleep 2
}

for r in $(seq "$ROUNDS"); do
  echo "round $r/$ROUNDS: forward" >&2
  measure forward 18080 15201
  echo "round $r/$ROUNDS: socat" >&2
  measure socat 38080 35201
  echo "round $r/$ROUNDS: socat -b 131072" >&2
  measure socat-b128k 38081 35202
done
FWD_STATS=$(grep '"event":"stats"' "$TMP/forward.log" | tail -1)
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

python3 - "$TMP" "$ROUNDS" "$FWD_STATS" <<'EOF'
import json, statistics, sys
tmp, rounds, stats = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def load(p):
    try:
        return json.load(open(p))
    except Exception:
        return {}
def bps(d):
    return d.get("end", {}).get("sum_received", {}).get("bits_per_second", 0) / 1e9
rows = {}
for m in ["forward", "socat", "socat-b128k"]:
    v = {"p50": [], "p99": [], "cps": [], "errs": [], "up": [], "down": [], "opens": []}
    for r in range(1, rounds + 1):
        base = f"{tmp}/{m}-{r}"
        lat, rate = load(base + ".lat"), load(base + ".rate")
        v["p50"].append(lat.get("p50_us", 0)); v["p99"].append(lat.get("p99_us", 0))
        v["cps"].append(rate.get("cps", 0)); v["errs"].append(rate.get("errors", 0) + lat.get("errors", 0))
        v["up"].append(bps(load(base + ".up"))); v["down"].append(bps(load(base + ".down")))
        v["opens"].append(int(open(base + ".opens").read().strip() or 0))
    rows[m] = {k: statistics.median(x) for k, x in v.items()}
    rows[m]["errs"] = sum(v["errs"])
print(f"| method | p50 µs | p99 µs | conn/s (c=8) | up Gbit/s | down Gbit/s | TCP connections per 100 local | errors |")
print("|---|---|---|---|---|---|---|---|")
for m, x in rows.items():
    print(f"| {m} | {x['p50']:.0f} | {x['p99']:.0f} | {x['cps']:.0f} | {x['up']:.2f} | {x['down']:.2f} | {x['opens']:.0f} | {x['errs']} |")
f = rows["forward"]
print()
for b in ["socat", "socat-b128k"]:
    s = rows[b]
    print(f"forward vs {b}: p50 {f['p50'] / max(s['p50'], 1):.2f}x, conn/s {f['cps'] / max(s['cps'], 1):.2f}x, "
          f"up {f['up'] / max(s['up'], 1e-9):.2f}x, down {f['down'] / max(s['down'], 1e-9):.2f}x ({rounds} rounds, medians)")
if stats:
    t = json.loads(stats)["totals"]
    print(f"forward's own count: {t['connections']} local connections, {t['api_connections']} API connections, {t['api_failures']} refused")
EOF
