#!/usr/bin/env bash
# Builds kubelan, starts the built-in lab (a simulated cluster in network namespaces),
# shows a request from a node to a Service by its cluster DNS name, then installs the
# kubelan agent and reaches the same Service from the remote laptop through
# `kubelan proxy`, then with `kubelan connect` (a VPN: no proxy settings at all). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "the lab builds network namespaces: run as root (sudo $0)" >&2
  exit 1
fi
./scripts/deps.sh
echo "== building kubelan (release)"
cargo build --release --locked -p kubelan
K=target/release/kubelan
$K lab down >/dev/null
echo "== starting the lab"
$K lab up
echo
echo "== from node1: curl http://web.default.svc.cluster.local"
$K lab exec node1 -- curl -sS -m 5 -w '   (HTTP %{http_code} from a web pod)\n' http://web.default.svc.cluster.local
echo "== from pc1 (office LAN, no route to the cluster yet): the same request fails fast"
$K lab exec pc1 -- curl -sS -m 5 http://172.17.32.2/ || true
echo
echo "== kubelan install (the in-cluster agent)"
KUBECONFIG=$($K lab kubeconfig) $K install --timeout 60
echo "== from the laptop (no route to the cluster): kubelan proxy, then curl through it"
LOG=$(mktemp)
$K lab exec laptop -- sh -c '
  kubelan proxy --listen 127.0.0.1:1080 2>"$1" & pid=$!
  for i in $(seq 50); do grep -q "connected via" "$1" && break; sleep 0.2; done
  grep -E "connected via|reconnecting" "$1" | head -1
  curl -sS -m 5 --socks5-hostname 127.0.0.1:1080 -w "   (HTTP %{http_code} through kubelan proxy)\n" http://web.default.svc.cluster.local
  kill $pid' sh "$LOG"
echo "== from the laptop: kubelan connect (TUN, routes, split DNS), then plain curl, dig and ping"
$K lab exec laptop -- sh -c '
  timeout 120 kubelan connect 2>"$1" & pid=$!
  for i in $(seq 50); do grep -q "connected via" "$1" && break; sleep 0.2; done
  sed "s/^/   /" "$1"
  curl -sS -m 5 -w "   (HTTP %{http_code}, no proxy settings)\n" http://web
  echo "   dig db-2.db.default.svc.cluster.local: $(dig +short +time=3 db-2.db.default.svc.cluster.local)"
  ping -c 2 -W 2 "$(dig +short +time=3 db-2.db.default.svc.cluster.local)" | tail -2 | sed "s/^/   /"
  kubelan status | sed "s/^/   /"
  kubelan quit
  wait $pid' sh "$LOG"
rm -f "$LOG"
echo
$K lab status || true
echo
echo "kubectl:      kubectl --kubeconfig \$(sudo $K lab kubeconfig) get pods -A"
echo "a lab shell:  sudo $K lab exec laptop -- bash      (then: kubelan connect &; curl http://web; kubelan status; kubelan quit)"
echo "remove it:    sudo $K lab down"
