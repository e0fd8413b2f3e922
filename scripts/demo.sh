#!/usr/bin/env bash
# The whole story on the built-in lab (a simulated cluster in network namespaces), one line
# per step:
#   - the laptop (outside the cluster, behind a NAT) reaches a Service by its DNS name
#     through `kubelan proxy`, then with `kubelan connect` (a VPN: no proxy settings);
#   - an office PC with nothing installed reaches the same Service by name through
#     `kubelan gateway --mode node` on a node, once the office router has the static routes
#     and the DNS forwarder that `kubelan routes` prints.
# Needs root. Builds kubelan (release) first; `--debug` uses a debug build instead (CI runs
# it after the tests, which built one). kubelan's own logs go to files that are named when
# a step fails. Everything it starts — its processes and its lab, named demo-<pid> — is
# removed on success, on failure and on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=release
case "${1:-}" in
  "") ;;
  --debug) PROFILE=debug ;;
  *)
    echo "usage: sudo $0 [--debug]" >&2
    exit 2
    ;;
esac
if [ "$(id -u)" != 0 ]; then
  echo "the lab builds network namespaces: run as root (sudo $0)" >&2
  exit 1
fi
./scripts/deps.sh
if [ "$PROFILE" = release ]; then
  echo "building kubelan (release; the first build takes several minutes)"
  cargo build --release --locked -p kubelan
else
  cargo build --locked -p kubelan
fi
TARGET=${CARGO_TARGET_DIR:-target}
K=$(realpath "$TARGET/$PROFILE/kubelan")

LAB=demo-$$ # unique per run; lab names are at most 12 characters
export KUBELAN_LAB=$LAB
LOGS=$(mktemp -d /tmp/kubelan-demo.XXXXXX)
URL=http://web.default.svc.cluster.local
GATEWAY=10.4.7.11 # node1
LAN=172.16.0.0/18 # the office LAN
PIDS=()
STEP=""
START=$SECONDS

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local p
  for p in "${PIDS[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]}"; do
    wait "$p" 2>/dev/null || true
  done
  if ! "$K" lab down --name "$LAB" >>"$LOGS/lab-down.log" 2>&1; then
    echo "could not remove the lab: sudo $K lab down --name $LAB ($LOGS/lab-down.log)" >&2
    rc=1
  fi
  if [ "$rc" = 0 ]; then
    rm -rf "$LOGS"
    echo "lab $LAB removed"
  else
    echo "demo failed${STEP:+ at: $STEP}; kubelan's logs: $LOGS" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'printf ": interrupted\n"; exit 130' INT
trap 'exit 143' TERM

# step TEXT: starts a step's line; ok RESULT ends it; fail REASON ends it and the demo.
step() {
  STEP=$1
  printf '%s' "$1"
}
ok() { printf ': %s\n' "$1"; }
fail() {
  printf ': FAILED: %s\n' "$1"
  exit 1
}

# Runs a command on a lab host, its output in the log file $2.
on() {
  local host=$1 log=$2
  shift 2
  "$K" lab exec "$host" -- "$@" >>"$LOGS/$log" 2>&1
}

# Starts a long-running command on a lab host in the background (its output in $LOGS/$2).
start() {
  local host=$1 log=$2
  shift 2
  "$K" lab exec "$host" -- "$@" >"$LOGS/$log" 2>&1 &
  PIDS+=($!)
}

# Waits until $LOGS/$1 contains $2 (at most $3 seconds) while the last started command runs.
wait_log() {
  local i pid=${PIDS[-1]}
  for ((i = 0; i < $3 * 10; i++)); do
    grep -q "$2" "$LOGS/$1" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# fetch HOST [CURL ARGS...]: curl $URL on a lab host; prints `CODE "first line of the body"`,
# succeeds on 200.
fetch() {
  local host=$1 out code body
  shift
  out=$("$K" lab exec "$host" -- curl -sS -m 5 -w '\n%{http_code}' "$@" "$URL" 2>>"$LOGS/curl.log") || {
    printf '%s' "$(tail -1 "$LOGS/curl.log")"
    return 1
  }
  code=${out##*$'\n'}
  body=$(head -1 <<<"${out%$'\n'*}")
  printf '%s "%s"' "$code" "${body:0:40}"
  [ "$code" = 200 ]
}

echo "kubelan demo on lab $LAB (a simulated cluster: 2 nodes, an office LAN with pc1 and pc2, a laptop)"

step "lab up"
"$K" lab up --name "$LAB" >"$LOGS/lab-up.log" 2>&1 || fail "see $LOGS/lab-up.log"
ok "ready in $((SECONDS - START)) s"

step "node1 (inside the cluster) → $URL"
r=$(fetch node1) || fail "$r"
ok "$r"

step "office PC pc1 → $URL, before kubelan"
if r=$(fetch pc1); then fail "it should not reach the cluster yet: $r"; fi
ok "fails, as it should (no DNS, no route)"

step "kubelan install (the agent, in namespace kubelan-system)"
KUBECONFIG=$("$K" lab kubeconfig --name "$LAB") "$K" install --timeout 60 >"$LOGS/install.log" 2>&1 ||
  fail "$(tail -1 "$LOGS/install.log")"
ok "ready"

step "laptop: kubelan proxy, then curl --socks5-hostname 127.0.0.1:1080 $URL"
start laptop proxy.log kubelan proxy --listen 127.0.0.1:1080
wait_log proxy.log "connected via" 20 || fail "no session ($LOGS/proxy.log)"
r=$(fetch laptop --socks5-hostname 127.0.0.1:1080) || fail "$r"
ok "$r"
kill "${PIDS[-1]}"

step "laptop: kubelan connect, then curl $URL (no proxy settings)"
start laptop connect.log kubelan connect
wait_log connect.log "connected via" 20 || fail "no session ($LOGS/connect.log)"
r=$(fetch laptop) || fail "$r"
ok "$r"

step "node1: kubelan gateway --mode node --lan $LAN"
start node1 gateway.log kubelan gateway --mode node --lan "$LAN"
wait_log gateway.log "gateway ready" 30 || fail "not ready ($LOGS/gateway.log)"
ok "ready (forwarding and SNAT for the LAN, DNS on $GATEWAY:53)"

# What the office's admin types: the routes on the router, the forwarder on the office's DNS
# server (a dnsmasq on pc2, which the other PCs use as DHCP would have told them).
"$K" lab exec office-router -- kubelan routes --format linux --gateway "$GATEWAY" \
  >"$LOGS/routes.txt" 2>>"$LOGS/routes.log" || {
  step "office router: kubelan routes"
  fail "$(tail -1 "$LOGS/routes.log")"
}
"$K" lab exec office-router -- kubelan routes --format dnsmasq --gateway "$GATEWAY" \
  >"$LOGS/dnsmasq.conf" 2>>"$LOGS/routes.log" || {
  step "office DNS: kubelan routes"
  fail "$(tail -1 "$LOGS/routes.log")"
}
while read -r line; do
  step "office router: $line"
  # shellcheck disable=SC2086 # the printed line is the command
  on office-router routes.log $line || fail "see $LOGS/routes.log"
  ok "added"
done < <(grep '^ip route add ' "$LOGS/routes.txt")
step "office DNS server (dnsmasq on pc2): $(grep -m1 "^server=/cluster.local/" "$LOGS/dnsmasq.conf")"
start pc2 dnsmasq.log dnsmasq -k -C "$LOGS/dnsmasq.conf" --listen-address 172.16.1.12 \
  --bind-interfaces --no-resolv --no-hosts --pid-file= --user=root --log-facility=-
wait_log dnsmasq.log "started" 10 || fail "dnsmasq did not start ($LOGS/dnsmasq.log)"
on pc1 resolv.log sh -c 'echo "nameserver 172.16.1.12" >/etc/resolv.conf' || fail "see $LOGS/resolv.log"
ok "serving the office LAN"

step "office PC pc1 → $URL"
r=$(fetch pc1) || fail "$r"
ok "$r"

STEP=""
echo "all steps passed in $((SECONDS - START)) s; to explore a lab: sudo kubelan lab up (docs/lab.md)"
