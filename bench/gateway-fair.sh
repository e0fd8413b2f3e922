#!/usr/bin/env bash
# Fairness of `kubelan gateway --mode tunnel` under many LAN clients at once (issue 19:
# "50 LAN clients (namespaces) at once served fairly", max/min per-client throughput ≤ 1.5).
#
#   sudo bench/gateway-fair.sh [ROUNDS] [kubelan binary]   (release build recommended)
#
# Topology: its own lab (default nodes and workloads) whose office LAN holds the gateway
# host `gw` (172.16.1.10) and CLIENTS client PCs pc1..pcN (172.16.1.11, .12, ...). The
# office router routes the Service and Pod CIDRs to gw (as bench/gateway.sh does), which
# runs `kubelan gateway --mode tunnel --lan 172.16.0.0/18 --no-dns`:
#
#   pcN → office-router → gw (nftables redirect → kubelan's listener) ══ session ══ agent
#       → iperf3 pod on node2
#
# (gw shares the PCs' subnet, so the router also sends them ICMP redirects and they soon
# send to gw directly; the gateway warns about it once. Same as bench/gateway.sh.)
#
# One pod on node2 runs CLIENTS+1 iperf3 servers on ports 5200..5200+CLIENTS (an iperf3
# server serves one test at a time): pcN uses port 5200+N, port 5200 serves the reference.
# Each round: all clients start together (each waits for a go-file, so the lab exec start-up
# is not in the measurement) with `iperf3 -c POD -p PORT -t DURATION -J`, upload; then the
# same with `-R` (download); then the reference, pc1 alone with `-P 8`, up and down, through
# the same gateway. Per direction and round it prints completed clients, min, median, max,
# max/min of the per-client throughput (iperf3's receiver side), the same ratio without each
# client's first second ("after 1 s": the clients' connections open over some tens of
# milliseconds, and whoever is through its iperf3 handshake first has the path to itself
# until the others are), the aggregate, and the spread of the clients' start times; then
# every client's numbers, the gateway's `kubelan status` counters and any warning or error
# line of its log.
#
# Latency under load: one more PC, `probe` (the address after the last client's), asks the
# lab's `web` Service (HTTP, through the same gateway) one request at a time with curl, every
# 0.1 s: for 3 s before the first round (idle), then from 1 s after each round's start
# until 1 s before its end. Each request is a new connection, so what it measures is what a
# user's new request waits while the office's bulk transfers fill the tunnel: the
# connection's setup to the pod and the answer back, behind everyone else's bytes. Printed per
# round and direction: requests, failures, and the time from connected to the first byte of
# the answer (curl's time_starttransfer - time_connect), p50 / p90 / max in ms.
#
# Environment (for debugging on a small lab): CLIENTS (default 50), DURATION (iperf3 -t,
# default 10), LIMIT (whole run, seconds, default 1800), KEEP=DIR (copy the raw iperf3 JSON
# and the gateway log there), GW_FLAGS (extra gateway arguments, e.g. -vv), GW_MODE=node
# (the kernel's path for reference: the office router routes the cluster prefixes to node1,
# which runs `kubelan gateway --mode node`, forwarding and masquerading; same clients,
# same rounds, so the lab's own spread under this load shows beside the tunnel's),
# GW_IPERF (extra words for every iperf3 client, e.g. "-C cubic": the lab's namespaces
# inherit the machine's congestion control, BBR on some of ours).
#
# Everything runs inside the lab's namespaces (the office route is set on the lab's office
# router); every process is bounded by `timeout`, killed by PID on exit, and the lab is
# brought down on exit. Nothing is changed in the machine's root namespace.
set -euo pipefail
if [ -z "${GWFAIR_BOUNDED:-}" ]; then
  # The whole run is bounded: after LIMIT seconds the script gets SIGTERM and cleans up.
  GWFAIR_BOUNDED=1 exec timeout --foreground -k 120 "${LIMIT:-1800}" "$0" "$@"
fi
ROUNDS=${1:-2}
K=${2:-target/release/kubelan}
CLIENTS=${CLIENTS:-50}
DURATION=${DURATION:-10}
GW_MODE=${GW_MODE:-tunnel}
[[ $ROUNDS =~ ^[1-9][0-9]?$ ]] || { echo "ROUNDS: 1..99" >&2; exit 2; }
if ! [[ $CLIENTS =~ ^[1-9][0-9]*$ ]] || [ "$CLIENTS" -lt 2 ] || [ "$CLIENTS" -gt 200 ]; then
  echo "CLIENTS: 2..200" >&2; exit 2
fi
[[ $DURATION =~ ^[1-9][0-9]?$ ]] || { echo "DURATION: 1..99 s" >&2; exit 2; }
case $GW_MODE in tunnel | node) ;; *) echo "GW_MODE: tunnel or node" >&2; exit 2 ;; esac
[ -x "$K" ] || { echo "build first: cargo build --release --locked -p kubelan" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "needs root (the lab)" >&2; exit 1; }
for t in iperf3 jq awk timeout curl; do
  command -v $t >/dev/null || { echo "needs $t" >&2; exit 1; }
done
K=$(realpath "$K")
name="bgf$(( $$ % 1000000 ))"
GW_ADDR=172.16.1.10
NODE1_ADDR=10.4.7.11 # node1's address on the office side (as bench/gateway.sh routes it)
BASE_PORT=5200
work=$(mktemp -d /tmp/kubelan-gwfair.XXXXXX)
chmod 755 "$work"
bg=()       # PIDs of the `lab exec` processes started in the background (each forwards
            # SIGTERM to its command and exits with it)
gw_outer=   # the gateway's `lab exec`
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for p in "${bg[@]}"; do kill "$p" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local alive=0
    for p in "${bg[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "${bg[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  "$K" lab down --name "$name" >/dev/null 2>&1 || true
  if [ -n "${KEEP:-}" ]; then { mkdir -p "$KEEP" && cp -r "$work"/. "$KEEP"/; } || true; fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
x() { local host=$1; shift; timeout 120 "$K" lab exec --name "$name" "$host" -- "$@"; }

# --- the lab -------------------------------------------------------------------------------
{
  echo '[office]'
  printf '[[office.pcs]]\nname = "gw"\naddress = "%s"\n' "$GW_ADDR"
  for i in $(seq "$CLIENTS"); do
    printf '[[office.pcs]]\nname = "pc%d"\naddress = "172.16.1.%d"\n' "$i" $((10 + i))
  done
  printf '[[office.pcs]]\nname = "probe"\naddress = "172.16.1.%d"\n' $((11 + CLIENTS))
} >"$work/lab.toml"
t0=$(date +%s)
timeout 600 "$K" lab up --name "$name" --config "$work/lab.toml" >/dev/null
echo "lab $name up with $CLIENTS client PCs + gw in $(( $(date +%s) - t0 )) s"
x node1 kubelan install >"$work/install.log" 2>&1 || { cat "$work/install.log" >&2; exit 1; }

last_port=$((BASE_PORT + CLIENTS))
cat >"$work/iperf.yaml" <<YAML
apiVersion: v1
kind: Pod
metadata: {name: iperf, namespace: default}
spec:
  nodeName: node2
  containers:
  - name: iperf
    image: networkstatic/iperf3
    command: [sh, -c, 'for p in \$(seq $BASE_PORT $last_port); do iperf3 -s -p \$p & done; wait']
YAML
x node1 kubectl apply -f "$work/iperf.yaml" >/dev/null
ip=
for _ in $(seq 120); do
  ip=$(x node1 kubectl get pod iperf -o jsonpath='{.status.podIP}' 2>/dev/null || true)
  if [ -n "$ip" ]; then
    n=$(x default/iperf ss -Hltn 2>/dev/null | awk -v a=$BASE_PORT -v b="$last_port" \
      '{ p = $4; sub(/.*:/, "", p); if (p >= a && p <= b) n++ } END { print n + 0 }' || echo 0)
    [ "$n" = $((CLIENTS + 1)) ] && break
  fi
  sleep 0.5
done
[ "${n:-0}" = $((CLIENTS + 1)) ] || { echo "iperf pod: ${n:-0} of $((CLIENTS + 1)) servers listening" >&2; exit 1; }
echo "iperf3 pod $ip (node2): servers on ports $BASE_PORT..$last_port"
web=$(x node1 kubectl get service web -o jsonpath='{.spec.clusterIP}')
[ -n "$web" ] || { echo "the lab has no web Service" >&2; exit 1; }

log=$work/gateway.log
if [ "$GW_MODE" = node ]; then
  # The kernel's path, for reference: node1 forwards and masquerades, no kubelan in the
  # way of the bytes.
  for p in 172.17.16.0/20 172.17.32.0/23; do x office-router ip route replace "$p" via "$NODE1_ADDR"; done
  # shellcheck disable=SC2086 # GW_FLAGS: extra words, e.g. -vv
  "$K" lab exec --name "$name" node1 -- kubelan gateway --mode node --lan 172.16.0.0/18 --no-dns \
    ${GW_FLAGS:-} >"$log" 2>&1 &
  ready="gateway ready"
else
  for p in 172.17.16.0/20 172.17.32.0/23; do x office-router ip route replace "$p" via "$GW_ADDR"; done
  # shellcheck disable=SC2086 # GW_FLAGS: extra words, e.g. -vv
  "$K" lab exec --name "$name" gw -- kubelan gateway --mode tunnel --lan 172.16.0.0/18 --no-dns \
    ${GW_FLAGS:-} >"$log" 2>&1 &
  ready="✓ connected"
fi
gw_outer=$!
bg+=("$gw_outer")
for _ in $(seq 150); do grep -q "$ready" "$log" && break; sleep 0.2; done
grep -q "$ready" "$log" || { cat "$log" >&2; echo "gateway did not start" >&2; exit 1; }
sleep 1
if [ "$GW_MODE" = tunnel ]; then
  redirect=$(x gw kubelan status --output json | jq -c '.redirect')
  echo "gateway on gw: redirect $redirect"
  [ "$(echo "$redirect" | jq -r .active)" = true ] ||
    echo "WARNING: TCP is not redirected on the gateway: the numbers measure the userspace stack" >&2
else
  echo "gateway on node1: --mode node (kernel forwarding)"
fi
# gwcpu: CPU seconds (user+system) the gateway process has used so far.
gw_pid=$(pgrep -P "$gw_outer" | head -1 || true)
gwcpu() {
  if [ -z "$gw_pid" ] || [ ! -r "/proc/$gw_pid/stat" ]; then echo 0; return; fi
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); print ($12 + $13) / hz }' "/proc/$gw_pid/stat"
}

# --- the latency probe --------------------------------------------------------------------------
# probe SECONDS DELAY OUT: after DELAY s, requests to http://$web/ from the probe PC, one at a
# time, 0.1 s apart, for SECONDS s (at most 10 a second); one line per request in OUT:
# "connect starttransfer" in seconds, or "fail". Bounded: each request by 5 s, the whole by
# DELAY + SECONDS + 15 s.
probe() {
  local secs=$1 delay=$2 out=$3
  # shellcheck disable=SC2016
  timeout $((delay + secs + 15)) "$K" lab exec --name "$name" probe -- sh -c '
    sleep "$1"
    end=$(($(date +%s) + $2)) k=0
    while [ $k -lt $(($2 * 10)) ] && [ "$(date +%s)" -lt $end ]; do
      k=$((k + 1))
      r=$(curl -s -o /dev/null --max-time 5 -w "%{time_connect} %{time_starttransfer}" "http://$3/") &&
        echo "$r" || echo fail
      sleep 0.1
    done' sh "$delay" "$secs" "$web" >"$out" 2>/dev/null || true
}

# probe_row LABEL FILE: one row of the probe table.
probe_row() {
  awk -v l="$1" '
    $1 == "fail" || NF < 2 { f++; next }
    { v[++n] = ($2 - $1) * 1000 }
    END {
      if (n == 0) { printf "| %s | 0 | %d | - | - | - |\n", l, f; exit }
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
      p50 = v[int((n + 1) / 2)]; p90 = v[int(n * 0.9 + 0.999)]
      printf "| %s | %d | %d | %.1f | %.1f | %.1f |\n", l, n + f, f + 0, p50, p90, v[n]
    }' "$2"
}

# --- one round -------------------------------------------------------------------------------
# clients DIR ROUND [iperf3 flags...]: all clients at once; raw JSON in $work/rROUND-DIR/.
clients() {
  local dir=$1 round=$2; shift 2
  local rdir=$work/r$round-$dir outer=() i
  mkdir -p "$rdir"
  for i in $(seq "$CLIENTS"); do
    # Each client writes its PID, waits (≤ 60 s) for the go-file, notes its start time,
    # then becomes `timeout 60 iperf3 ...`.
    # shellcheck disable=SC2016,SC2086 # GW_IPERF: extra words
    "$K" lab exec --name "$name" "pc$i" -- sh -c '
      d=$1 c=$2; shift 2
      echo $$ >"$d/pc$c.pid"
      n=0
      until [ -e "$d/go" ]; do n=$((n + 1)); [ $n -le 600 ] || exit 3; sleep 0.1; done
      date +%s.%N >"$d/pc$c.start"
      exec timeout 60 "$@"' sh "$rdir" "$i" \
      iperf3 -c "$ip" -p $((BASE_PORT + i)) -t "$DURATION" -J ${GW_IPERF:-} "$@" \
      >"$rdir/pc$i.json" 2>"$rdir/pc$i.err" &
    outer+=("$!")
    bg+=("$!")
  done
  for _ in $(seq 600); do
    [ "$(find "$rdir" -name '*.pid' | wc -l)" = "$CLIENTS" ] && break
    sleep 0.1
  done
  touch "$rdir/go"
  # The probe runs from 1 s after the start until about 1 s before the end.
  probe $((DURATION > 3 ? DURATION - 2 : 1)) 1 "$rdir/probe.txt" &
  outer+=("$!")
  bg+=("$!")
  for i in "${outer[@]}"; do wait "$i" || true; done
  # These have exited: forget them.
  local keep=() p o
  for p in "${bg[@]}"; do
    for o in "${outer[@]}"; do [ "$p" = "$o" ] && continue 2; done
    keep+=("$p")
  done
  bg=("${keep[@]}")
}

# late FILE: Mbit/s of one iperf3 -J result without its first second (the client's own
# intervals), or ERR.
late() {
  jq -r 'if (.error // "") != "" or (.intervals | length) < 2 then "ERR" else
      (.intervals[1:] | (map(.sum.bytes) | add) * 8 / (map(.sum.seconds) | add) / 1e6 * 10 | floor / 10) end' \
    "$1" 2>/dev/null | grep -E '^[0-9.]+$' || echo ERR
}

# mbps FILE: the receiver's Mbit/s of one iperf3 -J result, or ERR.
mbps() {
  jq -r 'if (.error // "") != "" then "ERR" else (.end.sum_received.bits_per_second / 1e6 * 10 | floor / 10) end' \
    "$1" 2>/dev/null | grep -E '^[0-9.]+$' || echo ERR
}

summary=$work/summary.md
echo '| round | direction | completed | min | median | max | max/min | after 1 s | aggregate | start spread | retransmits |' >"$summary"
echo '|---|---|---|---|---|---|---|---|---|---|---|' >>"$summary"
probes=$work/probes.md
: >"$probes"
ref=$work/ref.md
: >"$ref"

# stats DIR ROUND: one summary row from $work/rROUND-DIR.
stats() {
  local dir=$1 round=$2 rdir=$work/r$2-$1 i v vals=() errs=0
  for i in $(seq "$CLIENTS"); do
    v=$(mbps "$rdir/pc$i.json")
    echo "$v" >"$rdir/pc$i.mbps"
    if [ "$v" = ERR ]; then errs=$((errs + 1)); else vals+=("$v"); fi
  done
  local spread retr later
  later=$(for i in $(seq "$CLIENTS"); do late "$rdir/pc$i.json"; done | grep -v ERR | sort -n |
    awk 'NR == 1 { a = $1 } { b = $1 } END { if (a > 0) printf "%.2f", b / a; else print "-" }')
  spread=$(cat "$rdir"/pc*.start 2>/dev/null | sort -n | awk 'NR == 1 { a = $1 } { b = $1 } END { printf "%.2f s", b - a }')
  retr=$(cat "$rdir"/pc*.json 2>/dev/null | jq -s '[.[] | .end.sum_sent.retransmits // 0] | add' 2>/dev/null || echo "?")
  printf '%s\n' "${vals[@]}" | sort -n | awk -v r="$round" -v d="$dir" -v n="$CLIENTS" \
    -v ok="${#vals[@]}" -v s="$spread" -v rt="$retr" -v lt="$later" '
    NF { a[++k] = $1; sum += $1 }
    END {
      if (k == 0) { printf "| %s | %s | 0/%d | - | - | - | - | - | - | %s | %s |\n", r, d, n, s, rt; exit }
      med = (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
      ratio = (a[1] > 0) ? sprintf("%.2f", a[k] / a[1]) : "inf"
      printf "| %s | %s | %d/%d | %.1f | %.1f | %.1f | **%s** | %s | %.0f Mbit/s | %s | %s |\n",
        r, d, ok, n, a[1], med, a[k], ratio, lt, sum, s, rt
    }' >>"$summary"
  if [ "$errs" -gt 0 ]; then
    for i in $(seq "$CLIENTS"); do
      [ "$(cat "$rdir/pc$i.mbps")" = ERR ] || continue
      printf 'round %s %s pc%s failed: %s %s\n' "$round" "$dir" "$i" \
        "$(jq -r '.error // empty' "$rdir/pc$i.json" 2>/dev/null || true)" \
        "$(head -c 300 "$rdir/pc$i.err")" >>"$work/failures.txt"
    done
  fi
  probe_row "$round $dir" "$rdir/probe.txt" >>"$probes"
}

# reference ROUND [flags]: pc1 alone, -P 8.
reference() {
  local round=$1; shift
  local f=$work/r$round-ref$*.json
  # shellcheck disable=SC2086 # GW_IPERF: extra words
  timeout 90 "$K" lab exec --name "$name" pc1 -- timeout 60 iperf3 -c "$ip" -p $BASE_PORT \
    -t "$DURATION" -P 8 -J ${GW_IPERF:-} "$@" >"$f" 2>/dev/null || true
  mbps "$f"
}

echo "probe: requests to http://$web/ (web Service) for 3 s with the tunnel idle"
probe 3 0 "$work/probe-idle.txt"
probe_row "idle" "$work/probe-idle.txt" >>"$probes"
cpu0=$(gwcpu) t_rounds=$(date +%s)
for r in $(seq "$ROUNDS"); do
  echo "round $r: $CLIENTS clients up"
  clients up "$r"
  stats up "$r"
  sleep 2
  echo "round $r: $CLIENTS clients down (-R)"
  clients down "$r" -R
  stats down "$r"
  sleep 2
  echo "round $r: reference, pc1 alone with -P 8"
  up=$(reference "$r")
  sleep 1
  down=$(reference "$r" -R)
  echo "| $r | $up | $down |" >>"$ref"
  sleep 1
done

cpu1=$(gwcpu) t_rounds=$(( $(date +%s) - t_rounds ))
gw_host=gw
[ "$GW_MODE" = node ] && gw_host=node1
status=$(x $gw_host kubelan status --output json || echo '{}')
echo "$status" >"$work/gateway-status.json"
kill "$gw_outer" 2>/dev/null || true
for _ in $(seq 100); do kill -0 "$gw_outer" 2>/dev/null || break; sleep 0.1; done
wait "$gw_outer" 2>/dev/null || true

echo
echo "## $CLIENTS LAN clients at once through \`kubelan gateway --mode $GW_MODE\` (iperf3 -t $DURATION, Mbit/s per client)"
echo
cat "$summary"
echo
echo "Reference: pc1 alone, \`iperf3 -P 8\`, same gateway (aggregate Mbit/s):"
echo
echo '| round | up | down |'
echo '|---|---|---|'
cat "$ref"
echo
echo "Latency under load: new HTTP requests to the web Service from the probe PC during the"
echo "rounds (connected to first byte of the answer, ms):"
echo
echo '| round | requests | failed | p50 | p90 | max |'
echo '|---|---|---|---|---|---|'
cat "$probes"
echo
echo "Per client (Mbit/s):"
echo
hdr="| client |" sep="|---|"
for r in $(seq "$ROUNDS"); do hdr="$hdr up r$r | down r$r |"; sep="$sep---|---|"; done
echo "$hdr"
echo "$sep"
for i in $(seq "$CLIENTS"); do
  row="| pc$i |"
  for r in $(seq "$ROUNDS"); do
    row="$row $(cat "$work/r$r-up/pc$i.mbps") | $(cat "$work/r$r-down/pc$i.mbps") |"
  done
  echo "$row"
done
echo
if [ -s "$work/failures.txt" ]; then
  echo "Failed clients:"
  cat "$work/failures.txt"
else
  echo "Failed clients: none"
fi
echo
echo "Gateway counters (kubelan status on $gw_host, after all rounds):"
echo "$status" | jq -c '.counters // {}'
[ "$GW_MODE" = tunnel ] && { echo "$status" | jq -c '{state, carriers, stack}' 2>/dev/null || true; }
echo "Gateway CPU: $(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { printf "%.1f", b - a }') s over the $t_rounds s of the rounds (pid $gw_pid)"
warn=$(grep -aE '(^|[^A-Za-z])(WARN|ERROR)([^A-Za-z]|$)|warning:|error:' "$log" || true)
if [ -n "$warn" ]; then
  echo "Gateway log, warning/error lines ($(echo "$warn" | wc -l)), first 20:"
  echo "$warn" | head -20
else
  echo "Gateway log: no warning or error line ($(wc -l <"$log") lines)"
fi
