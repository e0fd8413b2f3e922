#!/usr/bin/env bash
# Agent (and proxy) memory idle and with N concurrent open flows.
#
#   sudo bench/agent-flows.sh [FLOWS]        # default 10000
#
# Two private network namespaces joined by a veth (nothing in the root namespace):
#   <p>-cli  10.231.0.2  kubelan proxy (127.0.0.1:1080) + bench/flowload.py
#   <p>-srv  10.231.0.1  kubelan agent --standalone (mTLS :7443) + TCP echo server :7
# flowload.py opens FLOWS SOCKS5 CONNECTs to the echo server (each echoes one ping, so it
# really crosses the tunnel) and holds them; we read VmRSS of the agent and the proxy idle
# and while all flows are open. Everything is bounded in time and removed on exit.
set -euo pipefail
FLOWS=${1:-10000}
cd "$(dirname "$0")/.."
BIN=${KUBELAN_BIN:-$PWD/target/release/kubelan}
[ -x "$BIN" ] || { echo "build first: cargo build --release --locked" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
P=klb$$
CLI=$P-cli SRV=$P-srv
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  ip netns del "$CLI" 2>/dev/null || true
  ip netns del "$SRV" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

ip netns add "$CLI"
ip netns add "$SRV"
ip link add "${P}a" netns "$CLI" type veth peer name "${P}b" netns "$SRV"
ip -n "$CLI" addr add 10.231.0.2/24 dev "${P}a"
ip -n "$SRV" addr add 10.231.0.1/24 dev "${P}b"
for ns in "$CLI" "$SRV"; do ip -n "$ns" link set lo up; done
ip -n "$CLI" link set "${P}a" up
ip -n "$SRV" link set "${P}b" up

rss() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
wait_port() { # ns port
  for _ in $(seq 100); do
    ip netns exec "$1" bash -c "exec 3<>/dev/tcp/${3:-127.0.0.1}/$2" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "port $2 in $1 did not open" >&2; return 1
}

"$BIN" agent --init-credentials "$TMP/creds" >/dev/null
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
ip netns exec "$SRV" "$BIN" lab serve echo --tcp 10.231.0.1:7 2>"$TMP/echo.log" & PIDS+=($!)
ip netns exec "$SRV" "$BIN" agent --standalone --listen-tls 10.231.0.1:7443 \
  --credentials "$TMP/creds" --pod-cidr 10.231.0.0/24 2>"$TMP/agent.log" & AGENT=$!; PIDS+=($AGENT)
wait_port "$SRV" 7443 10.231.0.1
ip netns exec "$CLI" "$BIN" proxy --listen 127.0.0.1:1080 --agent 10.231.0.1:7443 \
  --credentials "$TMP/creds" 2>"$TMP/proxy.log" & PROXY=$!; PIDS+=($PROXY)
wait_port "$CLI" 1080
sleep 1
idle_agent=$(rss $AGENT); idle_proxy=$(rss $PROXY)

ip netns exec "$CLI" timeout 200 python3 bench/flowload.py --proxy 127.0.0.1:1080 \
  --target 10.231.0.1:7 --flows "$FLOWS" --hold 6 --limit 150 --ready-file "$TMP/ready" \
  >"$TMP/load.json" & LOAD=$!; PIDS+=($LOAD)
for _ in $(seq 1800); do [ -f "$TMP/ready" ] && break; kill -0 $LOAD 2>/dev/null || break; sleep 0.1; done
sleep 1
busy_agent=$(rss $AGENT); busy_proxy=$(rss $PROXY)
active=$(ip netns exec "$SRV" ss -Htn state established '( sport = :7 )' | wc -l)
wait $LOAD || true
sleep 1
after_agent=$(rss $AGENT)
echo "flows: $(cat "$TMP/load.json")"
echo "echo-server connections established while held: $active"
echo "agent RSS MiB: idle $idle_agent, with flows $busy_agent, after close $after_agent"
echo "proxy RSS MiB: idle $idle_proxy, with flows $busy_proxy"
