#!/usr/bin/env bash
# Churn and scale benchmarks of `kubelan connect` (issue 19), on the peer harness's topology
# (pb-lap laptop → pb-gw agent → pb-pod 10.211.0.2), with one method held up by
# `run.sh --hold`:
#
#   sudo KUBELAN_BIN=<release build> bench/connect-load.sh [METHOD]   # default kubelan-connect
#
# Steps, all from pb-lap through the method to the pod:
#   churn   10 back-to-back `pbclient rate --n 10000 --conc 8` (100 000 short HTTP
#           connections); conn/s per chunk, min/first and last/first (target ≥ 0.9).
#           Then iperf3 -t 5 up and down fresh, a 20 000-connection burst, iperf3 up and
#           down again right after (target after/fresh ≥ 0.9).
#   scale   iperf3 -P 8 -t 5 (aggregate of 8 streams) against 1 000 streams: 8 iperf3
#           servers on 5202..5209 in pb-pod, 8 clients -P 125 -t 10 at once, their -J
#           sums added; up and down (target 1 000-stream/8-stream ≥ 0.9).
#   memory  VmRSS of the connect process idle, and while 10 000 TCP connections through it
#           are open and idle (a python3 asyncio holder in pb-pod, a python3 opener in
#           pb-lap); the agent's too (target connect ≤ 200 MB).
# The numbers are benchmarks, not pass/fail; the script prints them and a summary table.
#
# Environment: KUBELAN_BIN (the binary the method files use), PB_DIR (the peer harness;
# default ../shared/bench next to the repository or its worktree folder), PB_EXTRA_METHODS
# (more method folders, appended to this repository's bench/methods), CL_CHUNKS (10),
# CL_CHUNK_N (10000), CL_BURST_N (20000), CL_HOLD_N (10000), CL_STREAMS_PER (125).
# Everything is bounded in count and time; every process this script starts is stopped by
# PID on exit, and the harness by SIGINT to its PID (it removes its namespaces).
set -euo pipefail

METHOD=${1:-kubelan-connect}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${PB_DIR:-}" ]; then
  for d in "$REPO/../shared/bench" "$REPO/../../shared/bench"; do
    [ -x "$d/run.sh" ] && { PB_DIR=$(cd "$d" && pwd); break; }
  done
fi
{ [ -n "${PB_DIR:-}" ] && [ -x "$PB_DIR/run.sh" ]; } || { echo "peer harness not found: set PB_DIR" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "needs root (the harness's namespaces)" >&2; exit 1; }
for t in ip ss iperf3 jq python3 timeout; do
  command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 1; }
done
if ip netns list | grep -q '^pb-'; then
  echo "pb-* namespaces exist (another harness run, or a crashed one: ./run.sh --cleanup in $PB_DIR)" >&2
  exit 1
fi

LAP=pb-lap GW=pb-gw POD=pb-pod POD_IP=10.211.0.2
CHUNKS=${CL_CHUNKS:-10}
CHUNK_N=${CL_CHUNK_N:-10000}
BURST_N=${CL_BURST_N:-20000}
HOLD_N=${CL_HOLD_N:-10000}
PER=${CL_STREAMS_PER:-125}
HOLD_PORT=9100
PBCLIENT=$PB_DIR/.tools/bin/pbclient
TMP=$(mktemp -d /tmp/connect-load.XXXXXX)
HARNESS_PID=
PIDS=()
T0=$(date +%s)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
alive() { kill -0 "$1" 2>/dev/null; }

# stop PID: SIGTERM, up to 3 s, then SIGKILL.
stop() {
  local pid=$1 i
  alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 30); do alive "$pid" || break; sleep 0.1; done
  alive "$pid" && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
  return 0
}

cleanup() {
  local rc=$? p i
  set +e
  trap - EXIT INT TERM
  for p in "${PIDS[@]}"; do stop "$p"; done
  if [ -n "$HARNESS_PID" ] && alive "$HARNESS_PID"; then
    log "stopping the harness (SIGINT to $HARNESS_PID)"
    kill -INT "$HARNESS_PID"
    for i in $(seq 300); do alive "$HARNESS_PID" || break; sleep 0.1; done
    if alive "$HARNESS_PID"; then
      log "harness still up after 30 s: SIGTERM"
      kill -TERM "$HARNESS_PID"
      for i in $(seq 100); do alive "$HARNESS_PID" || break; sleep 0.1; done
    fi
    wait "$HARNESS_PID" 2>/dev/null
  fi
  if ip netns list | grep -q '^pb-'; then
    log "pb-* namespaces left behind: ./run.sh --cleanup"
    (cd "$PB_DIR" && ./run.sh --cleanup)
  fi
  if ip netns list | grep -q '^pb-'; then
    log "WARNING: pb-* namespaces still present"
  else
    log "no pb-* namespace left"
  fi
  log "harness log: $TMP/harness.log"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------- helpers ---
# rss PID: VmRSS in MB (one decimal), or "-" if the process is gone.
rss() { vm "$1" VmRSS; }
hwm() { vm "$1" VmHWM; }
vm() { # vm PID FIELD: a /proc/PID/status memory field in MB, "-" if the process is gone
  local v
  v=$(awk -v f="$2:" '$1 == f {printf "%.1f", $2 / 1024}' "/proc/$1/status" 2>/dev/null) || true
  echo "${v:--}"
}

# find_pid NS SUBCOMMAND: the kubelan process in NS whose first argument is SUBCOMMAND.
find_pid() {
  local ns=$1 sub=$2 p
  for p in $(ip netns pids "$ns"); do
    mapfile -d '' -t argv 2>/dev/null <"/proc/$p/cmdline" || continue
    [ "${#argv[@]}" -ge 2 ] || continue
    [[ ${argv[0]##*/} == kubelan* && ${argv[1]} == "$sub" ]] && { echo "$p"; return 0; }
  done
  return 1
}

ratio() { jq -nr --argjson a "$1" --argjson b "$2" 'if $b == 0 then "-" else ($a / $b * 1000 | round / 1000) end' 2>/dev/null || echo -; }
gbit() { jq -nr --argjson a "$1" '$a / 1e9 * 100 | round / 100' 2>/dev/null || echo -; }

# rate N: one pbclient rate run from pb-lap, JSON on stdout (an error object on failure).
rate() {
  nsx $LAP timeout 90 "$PBCLIENT" rate $POD_IP 80 --n "$1" --conc 8 --secs 60 ||
    echo '{"ok":0,"errors":0,"wall_s":0,"cps":0,"last_error":"pbclient failed"}'
}

# iperf PORT OUT ARGS...: one iperf3 client from pb-lap, -J into OUT; prints bits/s received
# (0 when the run failed).
iperf() {
  local port=$1 out=$2; shift 2
  nsx $LAP timeout 60 iperf3 -c $POD_IP -p "$port" -J "$@" >"$out" 2>&1 || true
  jq -r '.end.sum_received.bits_per_second // 0' "$out" 2>/dev/null || echo 0
}

# --------------------------------------------------------------- harness up ---
extra="$REPO/bench/methods${PB_EXTRA_METHODS:+:$PB_EXTRA_METHODS}"
log "harness: PB_EXTRA_METHODS=$extra KUBELAN_BIN=${KUBELAN_BIN:-} ./run.sh --hold $METHOD"
# Job control on for this one start: a background job of a non-interactive shell ignores
# SIGINT, and the harness tears down on SIGINT.
set -m
(cd "$PB_DIR" && PB_EXTRA_METHODS=$extra exec ./run.sh --hold "$METHOD") >"$TMP/harness.log" 2>&1 &
HARNESS_PID=$!
set +m
for _ in $(seq 120); do
  grep -q 'holding;' "$TMP/harness.log" && break
  alive "$HARNESS_PID" || break
  sleep 1
done
grep -q 'holding;' "$TMP/harness.log" || { cat "$TMP/harness.log" >&2; log "the harness did not come up"; exit 1; }
grep -q 'up: HTTP to the pod works' "$TMP/harness.log" || { cat "$TMP/harness.log" >&2; log "HTTP through $METHOD fails"; exit 1; }
STATE_DIR=$(sed -n 's/.* logs in \(.*\)\/logs; .*/\1/p' "$TMP/harness.log" | head -1)
CONNECT=$(find_pid $LAP connect) || { log "no kubelan connect process in $LAP"; exit 1; }
AGENT=$(find_pid $GW agent) || { log "no kubelan agent process in $GW"; exit 1; }
BIN=$(readlink -f "/proc/$CONNECT/exe")
log "up: connect PID $CONNECT ($BIN), agent PID $AGENT"
dmesg_before=$(dmesg 2>/dev/null | wc -l || echo 0)
sleep 2
RSS_IDLE_C=$(rss "$CONNECT") RSS_IDLE_A=$(rss "$AGENT")
log "idle RSS: connect $RSS_IDLE_C MB, agent $RSS_IDLE_A MB"

status_line() { # counters of connect, if `status` can reach it
  [ -n "$STATE_DIR" ] || return 0
  nsx $LAP timeout 10 env KUBELAN_STATE_DIR="$STATE_DIR/kubelan-state" "$BIN" status 2>&1 |
    grep -iE 'flow|tcp|udp|conn' | head -12 | sed 's/^/    /' || true
}
ct_count() { nsx "$1" cat /proc/sys/net/netfilter/nf_conntrack_count 2>/dev/null || echo -; }

# -------------------------------------------------------------------- churn ---
log "churn: $CHUNKS × pbclient rate --n $CHUNK_N --conc 8"
CPS=() OKS=() ERRS=()
t_churn=$(date +%s)
for ((i = 1; i <= CHUNKS; i++)); do
  j=$(rate "$CHUNK_N")
  echo "$j" >"$TMP/churn-$i.json"
  CPS+=("$(jq -r '.cps' <<<"$j")") OKS+=("$(jq -r '.ok' <<<"$j")") ERRS+=("$(jq -r '.errors' <<<"$j")")
  log "  chunk $i: $(jq -r '"\(.ok) ok, \(.errors) errors, \(.wall_s) s, \(.cps) conn/s" + (if .last_error != "" then ", last error: \(.last_error)" else "" end)' <<<"$j")"
done
churn_secs=$(($(date +%s) - t_churn))
cps_first=${CPS[0]} cps_last=${CPS[-1]}
cps_min=$(printf '%s\n' "${CPS[@]}" | sort -g | head -1)
cps_max=$(printf '%s\n' "${CPS[@]}" | sort -g | tail -1)
churn_ok=$(IFS=+; echo $((${OKS[*]})))
churn_err=$(IFS=+; echo $((${ERRS[*]})))
R_MIN=$(ratio "$cps_min" "$cps_first") R_LAST=$(ratio "$cps_last" "$cps_first")
log "churn: first $cps_first, min $cps_min, max $cps_max, last $cps_last conn/s; min/first $R_MIN, last/first $R_LAST; $churn_ok ok, $churn_err errors in $churn_secs s"
log "conntrack entries: laptop $(ct_count $LAP), gateway $(ct_count $GW); connect status:"
status_line >&2

sleep 2
log "iperf3 fresh (pod:5201, -t 5)"
UP_FRESH=$(iperf 5201 "$TMP/fresh-up.json" -t 5)
DOWN_FRESH=$(iperf 5201 "$TMP/fresh-down.json" -t 5 -R)
log "  fresh: up $(gbit "$UP_FRESH") down $(gbit "$DOWN_FRESH") Gbit/s"
log "burst: pbclient rate --n $BURST_N --conc 8"
BURST=$(rate "$BURST_N")
echo "$BURST" >"$TMP/burst.json"
log "  burst: $(jq -r '"\(.ok) ok, \(.errors) errors, \(.wall_s) s, \(.cps) conn/s"' <<<"$BURST")"
UP_AFTER=$(iperf 5201 "$TMP/after-up.json" -t 5)
DOWN_AFTER=$(iperf 5201 "$TMP/after-down.json" -t 5 -R)
R_UP=$(ratio "$UP_AFTER" "$UP_FRESH") R_DOWN=$(ratio "$DOWN_AFTER" "$DOWN_FRESH")
log "  after burst: up $(gbit "$UP_AFTER") down $(gbit "$DOWN_AFTER") Gbit/s; after/fresh up $R_UP down $R_DOWN"

# -------------------------------------------------------------------- scale ---
sleep 2
log "scale: iperf3 -P 8 -t 5 (pod:5201)"
UP_P8=$(iperf 5201 "$TMP/p8-up.json" -P 8 -t 5)
DOWN_P8=$(iperf 5201 "$TMP/p8-down.json" -P 8 -t 5 -R)
log "  8 streams: up $(gbit "$UP_P8") down $(gbit "$DOWN_P8") Gbit/s"
SRV=()
for p in $(seq 5202 5209); do
  nsx $POD iperf3 -s -B $POD_IP -p "$p" >"$TMP/iperf-s-$p.log" 2>&1 </dev/null &
  PIDS+=($!) SRV+=($!)
done
for _ in $(seq 50); do
  [ "$(nsx $POD ss -Hltn '( sport >= :5202 and sport <= :5209 )' | wc -l)" -ge 8 ] && break
  sleep 0.2
done
# many DIR [-R]: 8 clients × $PER streams at once; sets MANY_BPS (sum of the received
# bits/s) and MANY_N (streams connected); samples the connect process's RSS and the laptop's
# established sockets to the pod 6 s in (MANY_RSS, MANY_EST).
many() {
  local dir=$1 p pids=() b s; shift
  MANY_BPS=0 MANY_N=0
  for p in $(seq 5202 5209); do
    nsx $LAP timeout 60 iperf3 -c $POD_IP -p "$p" -P "$PER" -t 10 -J "$@" >"$TMP/many-$dir-$p.json" 2>&1 </dev/null &
    pids+=($!) PIDS+=($!)
  done
  sleep 6
  MANY_RSS=$(rss "$CONNECT")
  MANY_EST=$(nsx $LAP ss -Htn state established "( dst $POD_IP )" | wc -l)
  for p in "${pids[@]}"; do wait "$p" || true; done
  for p in $(seq 5202 5209); do
    b=$(jq -r '.end.sum_received.bits_per_second // 0' "$TMP/many-$dir-$p.json" 2>/dev/null) || b=0
    s=$(jq -r '.start.connected // [] | length' "$TMP/many-$dir-$p.json" 2>/dev/null) || s=0
    [ "$b" = 0 ] && log "  client :$p failed: $(jq -r '.error // empty' "$TMP/many-$dir-$p.json" 2>/dev/null | head -1)"
    MANY_BPS=$(jq -n --argjson a "$MANY_BPS" --argjson b "${b:-0}" '$a + $b') MANY_N=$((MANY_N + ${s:-0}))
  done
}
log "scale: 8 × iperf3 -P $PER -t 10 at once, up"
many up
UP_MANY=$MANY_BPS N_UP=$MANY_N RSS_MANY_UP=$MANY_RSS EST_UP=$MANY_EST
log "  up: $(gbit "$UP_MANY") Gbit/s over $N_UP streams (connect RSS $RSS_MANY_UP MB, $EST_UP laptop sockets established 6 s in)"
sleep 2
log "scale: 8 × iperf3 -P $PER -t 10 at once, down (-R)"
many down -R
DOWN_MANY=$MANY_BPS N_DOWN=$MANY_N RSS_MANY_DOWN=$MANY_RSS EST_DOWN=$MANY_EST
log "  down: $(gbit "$DOWN_MANY") Gbit/s over $N_DOWN streams (connect RSS $RSS_MANY_DOWN MB, $EST_DOWN laptop sockets established 6 s in)"
for p in "${SRV[@]}"; do stop "$p"; done
R_SUP=$(ratio "$UP_MANY" "$UP_P8") R_SDOWN=$(ratio "$DOWN_MANY" "$DOWN_P8")

# ------------------------------------------------------------------- memory ---
cat >"$TMP/holder.py" <<'EOF'
# Accepts TCP connections and holds them open (reads until EOF), for at most LIFE seconds.
import asyncio, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536))
host, port, life = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
async def hold(r, w):
    try:
        while await r.read(4096):
            pass
    except OSError:
        pass
    finally:
        w.close()
async def main():
    srv = await asyncio.start_server(hold, host, port, backlog=4096)
    async with srv:
        await asyncio.sleep(life)
asyncio.run(main())
EOF
cat >"$TMP/opener.py" <<'EOF'
# Opens N TCP connections (at most CONC connecting at once, BUDGET seconds in all), prints a
# "holding" JSON line, holds them HOLD seconds, then prints how many are still open.
import asyncio, json, resource, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536))
host, port, n, conc, budget, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
async def main():
    sem, conns, errs = asyncio.Semaphore(conc), [], {}
    deadline = time.monotonic() + budget
    async def one():
        async with sem:
            if time.monotonic() > deadline:
                errs["budget"] = errs.get("budget", 0) + 1
                return
            try:
                conns.append(await asyncio.wait_for(asyncio.open_connection(host, port), 10))
            except (OSError, asyncio.TimeoutError) as e:
                k = type(e).__name__
                errs[k] = errs.get(k, 0) + 1
    t0 = time.monotonic()
    await asyncio.gather(*(one() for _ in range(n)))
    print(json.dumps({"event": "holding", "open": len(conns), "errors": errs,
                      "open_secs": round(time.monotonic() - t0, 2)}), flush=True)
    await asyncio.sleep(hold)
    alive = sum(1 for r, _ in conns if not r.at_eof())
    print(json.dumps({"event": "held", "still_open": alive}), flush=True)
    for _, w in conns:
        w.close()
    await asyncio.sleep(0.5)
asyncio.run(main())
EOF
sleep 2
RSS_PRE_C=$(rss "$CONNECT")
log "memory: holder on $POD_IP:$HOLD_PORT, $HOLD_N connections from pb-lap held 12 s"
nsx $POD timeout 300 python3 "$TMP/holder.py" $POD_IP $HOLD_PORT 280 >"$TMP/holder.log" 2>&1 </dev/null &
HOLDER=$!
PIDS+=("$HOLDER")
for _ in $(seq 50); do nsx $POD ss -Hltn "sport = :$HOLD_PORT" | grep -q . && break; sleep 0.2; done
nsx $LAP timeout 200 python3 "$TMP/opener.py" $POD_IP $HOLD_PORT "$HOLD_N" 200 120 12 >"$TMP/opener.log" 2>&1 </dev/null &
OPENER=$!
PIDS+=("$OPENER")
for _ in $(seq 1400); do
  grep -q '"holding"' "$TMP/opener.log" && break
  alive "$OPENER" || break
  sleep 0.1
done
RSS_HOLD_C=- RSS_HOLD_A=- EST_POD=- EST_LAP=- OPENED=- STILL=-
if grep -q '"holding"' "$TMP/opener.log"; then
  OPENED=$(grep '"holding"' "$TMP/opener.log" | jq -r '.open')
  log "  opener: $(grep '"holding"' "$TMP/opener.log")"
  sleep 3 # let the far side finish its opens
  for _ in 1 2 3 4 5; do
    c=$(rss "$CONNECT") a=$(rss "$AGENT")
    RSS_HOLD_C=$(printf '%s\n%s\n' "$RSS_HOLD_C" "$c" | grep -v '^-$' | sort -g | tail -1)
    RSS_HOLD_A=$(printf '%s\n%s\n' "$RSS_HOLD_A" "$a" | grep -v '^-$' | sort -g | tail -1)
    sleep 1
  done
  EST_POD=$(nsx $POD ss -Htn state established "( sport = :$HOLD_PORT )" | wc -l)
  EST_LAP=$(nsx $LAP ss -Htn state established "( dst $POD_IP and dport = :$HOLD_PORT )" | wc -l)
  log "  held: connect RSS $RSS_HOLD_C MB (VmHWM $(hwm "$CONNECT")), agent RSS $RSS_HOLD_A MB; established: $EST_LAP laptop sockets to :$HOLD_PORT, $EST_POD at the pod"
else
  log "  the opener did not report: $(tail -3 "$TMP/opener.log")"
fi
wait "$OPENER" || true
STILL=$(grep '"held"' "$TMP/opener.log" | jq -r '.still_open') || true
STILL=${STILL:--}
log "  after the hold: $STILL still open at the opener; closed"
stop "$HOLDER"
sleep 5
RSS_END_C=$(rss "$CONNECT") RSS_END_A=$(rss "$AGENT")
log "idle at the end: connect $RSS_END_C MB, agent $RSS_END_A MB; connect status:"
status_line >&2

dmesg_new=$(dmesg 2>/dev/null | tail -n +"$((dmesg_before + 1))" | grep -iE 'conntrack|table full|dropping|oom' | head -5 || true)

# ------------------------------------------------------------------ summary ---
ok() { jq -nr --argjson r "$1" --argjson t "$2" 'if $r >= $t then "yes" else "NO" end' 2>/dev/null || echo -; }
le() { jq -nr --argjson r "$1" --argjson t "$2" 'if $r <= $t then "yes" else "NO" end' 2>/dev/null || echo -; }
cat <<EOF

## connect-load: $METHOD ($BIN), $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) vCPU, $(($(date +%s) - T0)) s

churn, conn/s per chunk of $CHUNK_N (c=8): ${CPS[*]}
errors per chunk: ${ERRS[*]}

| metric | value | target | holds |
|---|---|---|---|
| conn/s first $CHUNK_N | $cps_first | | |
| conn/s min / last chunk | $cps_min / $cps_last | | |
| churn min/first | $R_MIN | ≥ 0.9 | $(ok "$R_MIN" 0.9) |
| churn last/first | $R_LAST | ≥ 0.9 | $(ok "$R_LAST" 0.9) |
| churn connections ok / failed | $churn_ok / $churn_err | 0 failed | $([ "$churn_err" = 0 ] && echo yes || echo NO) |
| iperf3 up fresh → after $BURST_N burst (Gbit/s) | $(gbit "$UP_FRESH") → $(gbit "$UP_AFTER") ($R_UP) | ≥ 0.9 | $(ok "$R_UP" 0.9) |
| iperf3 down fresh → after burst (Gbit/s) | $(gbit "$DOWN_FRESH") → $(gbit "$DOWN_AFTER") ($R_DOWN) | ≥ 0.9 | $(ok "$R_DOWN" 0.9) |
| burst | $(jq -r '"\(.ok) ok, \(.errors) failed, \(.cps) conn/s"' <<<"$BURST") | | |
| up: 8 streams → $N_UP streams (Gbit/s) | $(gbit "$UP_P8") → $(gbit "$UP_MANY") ($R_SUP) | ≥ 0.9 | $(ok "$R_SUP" 0.9) |
| down: 8 streams → $N_DOWN streams (Gbit/s) | $(gbit "$DOWN_P8") → $(gbit "$DOWN_MANY") ($R_SDOWN) | ≥ 0.9 | $(ok "$R_SDOWN" 0.9) |
| connect RSS during the many-stream runs up / down (MB) | $RSS_MANY_UP / $RSS_MANY_DOWN | | |
| connect RSS idle at start / before the hold / end (MB) | $RSS_IDLE_C / $RSS_PRE_C / $RSS_END_C | | |
| connect RSS, $HOLD_N connections held (MB, max of 5 samples) | $RSS_HOLD_C | ≤ 200 | $(le "${RSS_HOLD_C/-/1e9}" 200) |
| connections opened / established at the laptop / at the pod / still open after 12 s | $OPENED / $EST_LAP / $EST_POD / $STILL | $HOLD_N | |
| agent RSS idle at start / held / end (MB) | $RSS_IDLE_A / $RSS_HOLD_A / $RSS_END_A | | |

dmesg (conntrack, drops, OOM) during the run: ${dmesg_new:-none}
raw files: $TMP
EOF
