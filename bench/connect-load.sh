#!/usr/bin/env bash
# Churn and scale benchmarks of `kubelan connect` (issue 19), on the peer harness's topology
# (pb-lap laptop → pb-gw agent → pb-pod 10.211.0.2), with one method held up by
# `run.sh --hold`:
#
#   sudo KUBELAN_BIN=<release build> bench/connect-load.sh [METHOD]   # default kubelan-connect
#
# Steps (CL_STEPS, default "churn,scale,memory"; run as churn, memory, scale, since the
# bulk runs grow connect's heap and it keeps it), all from pb-lap through the method:
#   churn   10 back-to-back `pbclient rate --n 10000 --conc 8` (100 000 short HTTP
#           connections); conn/s per chunk, min/first and last/first (target ≥ 0.9).
#           Then iperf3 -t 5 up and down fresh, a 20 000-connection burst, iperf3 up and
#           down again right after (target after/fresh ≥ 0.9).
#   scale   iperf3 -P 8 -t 5 (aggregate of 8 streams) against 1 000 streams: 8 iperf3
#           servers on 5202..5209 in pb-pod, 8 clients -P 125 -t 10 at once, their -J
#           sums added; up and down (target 1 000-stream/8-stream ≥ 0.9); 32, 128, 256 and 512
#           streams first, to see where a method breaks if it does. The same two
#           measurements from pb-gw straight to the pod (kernel path, no method) are the
#           control: what iperf3 and this machine give at 1 000 streams.
#   memory  VmRSS of the connect process idle, and while 10 000 TCP connections through it
#           are open and idle (a python3 asyncio holder in pb-pod, a python3 opener in
#           pb-lap); the agent's too (target connect ≤ 200 MB).
# The numbers are benchmarks, not pass/fail; the script prints them and a summary table.
#
# Environment: KUBELAN_BIN (the binary the method files use), PB_DIR (the peer harness;
# default ../shared/bench next to the repository or its worktree folder), PB_EXTRA_METHODS
# (more method folders, appended to this repository's bench/methods), CL_PERF_DIR (a folder:
# `perf record -a` for 4 s during each many-stream step, files perf-<step>.data), CL_STEPS, CL_CHUNKS
# (10), CL_CHUNK_N (10000), CL_BURST_N (20000), CL_HOLD_N (10000), CL_STREAMS_PER (125),
# CL_LADDER (streams per client measured through the method before CL_STREAMS_PER: "4 16 32 64").
# Everything is bounded in count and time; every process this script starts is stopped by
# PID on exit, and the harness by SIGINT to its PID (it removes its namespaces). Raw files
# and copies of the method's process logs stay in the /tmp/connect-load.* folder it names.
set -euo pipefail

METHOD=${1:-kubelan-connect}
# shellcheck source=harness.inc
source "$(dirname "${BASH_SOURCE[0]}")/harness.inc"
pb_preflight ip ss iperf3 jq python3 timeout

LAP=pb-lap GW=pb-gw POD=pb-pod POD_IP=10.211.0.2
STEPS=${CL_STEPS:-churn,scale,memory}
CHUNKS=${CL_CHUNKS:-10}
CHUNK_N=${CL_CHUNK_N:-10000}
BURST_N=${CL_BURST_N:-20000}
HOLD_N=${CL_HOLD_N:-10000}
PER=${CL_STREAMS_PER:-125}
LADDER=${CL_LADDER:-4 16 32 64}
HOLD_PORT=9100
PBCLIENT=$PB_DIR/.tools/bin/pbclient
TMP=$(mktemp -d /tmp/connect-load.XXXXXX)
HARNESS_PID='' STATE_DIR=''
PIDS=()
ROWS=()
T0=$(date +%s)

# Background processes start as `ip netns exec NS timeout SECS CMD &`, never through a shell
# function: `ip` becomes `timeout`, so $! is a PID that stop() can end (timeout passes the
# signal on to CMD), and every one of them ends by itself.
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
alive() { kill -0 "$1" 2>/dev/null; }
step() { [[ ",$STEPS," == *",$1,"* ]]; }
row() { ROWS+=("| $1 | $2 | ${3:-} | ${4:-} |"); }

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
  # the method's process logs live in the harness's state, removed with it: keep a copy
  [ -n "$STATE_DIR" ] && cp -r "$STATE_DIR/logs" "$TMP/harness-logs" 2>/dev/null
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
  log "raw files and logs: $TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------- helpers ---
# vm PID FIELD: a /proc/PID/status memory field in MB, "-" if the process is gone.
vm() {
  local v
  v=$(awk -v f="$2:" '$1 == f {printf "%.1f", $2 / 1024}' "/proc/$1/status" 2>/dev/null) || true
  echo "${v:--}"
}
rss() { vm "$1" VmRSS; }

# find_pid NS SUBCOMMAND: the kubelan process in NS whose first argument is SUBCOMMAND.
find_pid() {
  local ns=$1 sub=$2 p argv
  for p in $(ip netns pids "$ns"); do
    mapfile -d '' -t argv 2>/dev/null <"/proc/$p/cmdline" || continue
    [ "${#argv[@]}" -ge 2 ] || continue
    [[ ${argv[0]##*/} == kubelan* && ${argv[1]} == "$sub" ]] && { echo "$p"; return 0; }
  done
  return 1
}

ratio() { jq -nr --argjson a "$1" --argjson b "$2" 'if $b == 0 then "-" else ($a / $b * 1000 | round / 1000) end' 2>/dev/null || echo -; }
gbit() { jq -nr --argjson a "$1" '$a / 1e9 * 100 | round / 100' 2>/dev/null || echo -; }
holds() { # holds VALUE OP TARGET: yes / NO / -
  jq -nr --argjson v "$1" --argjson t "$3" "if \$v $2 \$t then \"yes\" else \"NO\" end" 2>/dev/null || echo -
}

# rate N: one pbclient rate run from pb-lap, JSON on stdout (an error object on failure).
rate() {
  nsx $LAP timeout 90 "$PBCLIENT" rate $POD_IP 80 --n "$1" --conc 8 --secs 60 ||
    echo '{"ok":0,"errors":0,"wall_s":0,"cps":0,"last_error":"pbclient failed"}'
}

# iperf NS PORT OUT ARGS...: one iperf3 client from NS, -J into OUT; prints bits/s received
# (0 when the run failed).
iperf() {
  local ns=$1 port=$2 out=$3; shift 3
  nsx "$ns" timeout 60 iperf3 -c $POD_IP -p "$port" -J "$@" >"$out" 2>&1 || true
  jq -r '.end.sum_received.bits_per_second // 0' "$out" 2>/dev/null || echo 0
}

status_lines() { # connect's own counters, if `status` reaches it
  [ -n "$STATE_DIR" ] || return 0
  nsx $LAP timeout 10 env KUBELAN_STATE_DIR="$STATE_DIR/kubelan-state" "$BIN" status 2>&1 |
    grep -E 'state:|flows:' | sed 's/^ */    /' >&2 || true
}
ct_count() { nsx "$1" cat /proc/sys/net/netfilter/nf_conntrack_count 2>/dev/null || echo -; }

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
STATE_DIR=$(sed -n 's/.* logs in \(.*\)\/logs; .*/\1/p' "$TMP/harness.log" | head -1)
grep -q 'up: HTTP to the pod works' "$TMP/harness.log" || { cat "$TMP/harness.log" >&2; log "HTTP through $METHOD fails"; exit 1; }
CONNECT=$(find_pid $LAP connect) || { log "no kubelan connect process in $LAP"; exit 1; }
AGENT=$(find_pid $GW agent) || { log "no kubelan agent process in $GW"; exit 1; }
BIN=$(readlink -f "/proc/$CONNECT/exe")
log "up: connect PID $CONNECT ($BIN), agent PID $AGENT"
dmesg_before=$(dmesg 2>/dev/null | wc -l) || dmesg_before=0
sleep 2
RSS_IDLE_C=$(rss "$CONNECT") RSS_IDLE_A=$(rss "$AGENT")
log "idle RSS: connect $RSS_IDLE_C MB, agent $RSS_IDLE_A MB"

# -------------------------------------------------------------------- churn ---
do_churn() {
  local i j cps=() oks=() errs=() t first last min max rmin rlast okn errn
  local up0 down0 up1 down1 rup rdown burst
  log "churn: $CHUNKS × pbclient rate --n $CHUNK_N --conc 8 (≤ 60 s each)"
  t=$(date +%s)
  for ((i = 1; i <= CHUNKS; i++)); do
    j=$(rate "$CHUNK_N")
    echo "$j" >"$TMP/churn-$i.json"
    cps+=("$(jq -r '.cps' <<<"$j")") oks+=("$(jq -r '.ok' <<<"$j")") errs+=("$(jq -r '.errors' <<<"$j")")
    log "  chunk $i: $(jq -r '"\(.ok) ok, \(.errors) errors, \(.wall_s) s, \(.cps) conn/s" + (if .last_error != "" then ", last error: \(.last_error)" else "" end)' <<<"$j")"
  done
  t=$(($(date +%s) - t))
  first=${cps[0]} last=${cps[-1]}
  min=$(printf '%s\n' "${cps[@]}" | sort -g | head -1)
  max=$(printf '%s\n' "${cps[@]}" | sort -g | tail -1)
  okn=$(IFS=+; echo $((${oks[*]})))
  errn=$(IFS=+; echo $((${errs[*]})))
  rmin=$(ratio "$min" "$first") rlast=$(ratio "$last" "$first")
  log "churn: first $first, min $min, max $max, last $last conn/s; min/first $rmin, last/first $rlast; $okn ok, $errn failed in $t s"
  log "conntrack entries now: laptop $(ct_count $LAP), gateway $(ct_count $GW); connect status:"
  status_lines
  CHURN_LINE="conn/s per chunk of $CHUNK_N (c=8): ${cps[*]}; failed per chunk: ${errs[*]}"
  row "conn/s first $CHUNK_N / min / max / last chunk" "$first / $min / $max / $last"
  row "churn min/first" "$rmin" "≥ 0.9" "$(holds "$rmin" '>=' 0.9)"
  row "churn last/first" "$rlast" "≥ 0.9" "$(holds "$rlast" '>=' 0.9)"
  row "churn connections ok / failed ($t s)" "$okn / $errn" "0 failed" "$([ "$errn" = 0 ] && echo yes || echo NO)"

  sleep 2
  log "iperf3 fresh (pod:5201, -t 5)"
  up0=$(iperf $LAP 5201 "$TMP/fresh-up.json" -t 5)
  down0=$(iperf $LAP 5201 "$TMP/fresh-down.json" -t 5 -R)
  log "  fresh: up $(gbit "$up0") down $(gbit "$down0") Gbit/s"
  log "burst: pbclient rate --n $BURST_N --conc 8"
  burst=$(rate "$BURST_N")
  echo "$burst" >"$TMP/burst.json"
  log "  burst: $(jq -r '"\(.ok) ok, \(.errors) errors, \(.wall_s) s, \(.cps) conn/s"' <<<"$burst")"
  up1=$(iperf $LAP 5201 "$TMP/after-up.json" -t 5)
  down1=$(iperf $LAP 5201 "$TMP/after-down.json" -t 5 -R)
  rup=$(ratio "$up1" "$up0") rdown=$(ratio "$down1" "$down0")
  log "  after the burst: up $(gbit "$up1") down $(gbit "$down1") Gbit/s; after/fresh up $rup down $rdown"
  row "burst of $BURST_N" "$(jq -r '"\(.ok) ok, \(.errors) failed, \(.cps) conn/s"' <<<"$burst")"
  row "iperf3 up: fresh → after the burst (Gbit/s)" "$(gbit "$up0") → $(gbit "$up1") ($rup)" "≥ 0.9" "$(holds "$rup" '>=' 0.9)"
  row "iperf3 down: fresh → after the burst (Gbit/s)" "$(gbit "$down0") → $(gbit "$down1") ($rdown)" "≥ 0.9" "$(holds "$rdown" '>=' 0.9)"
}

# -------------------------------------------------------------------- scale ---
# many NS TAG PER [-R]: 8 iperf3 clients × PER streams from NS at once (servers
# 5202..5209); sets MANY_BPS (sum of the received bits/s), MANY_N (streams connected),
# MANY_FAILED (clients without a result) and, 6 s in, MANY_RSS (connect's RSS) and MANY_EST
# (sockets established from NS to the pod).
many() {
  local ns=$1 tag=$2 per=$3 p pids=() b s; shift 3
  MANY_BPS=0 MANY_N=0 MANY_FAILED=0
  for p in $(seq 5202 5209); do
    ip netns exec "$ns" timeout 60 iperf3 -c $POD_IP -p "$p" -P "$per" -t 10 -J "$@" >"$TMP/many-$tag-$p.json" 2>&1 </dev/null &
    pids+=($!) PIDS+=($!)
  done
  if [ -n "${CL_PERF_DIR:-}" ] && command -v perf >/dev/null; then
    # a system-wide profile of 4 s from 2 s in (bounded; for unstripped builds)
    sleep 2
    timeout 20 perf record -a -F 499 -o "$CL_PERF_DIR/perf-$tag.data" -- sleep 4 >/dev/null 2>&1 || true
  else
    sleep 6
  fi
  MANY_RSS=$(rss "$CONNECT")
  MANY_EST=$(nsx "$ns" ss -Htn state established "( dst $POD_IP )" | wc -l)
  for p in "${pids[@]}"; do wait "$p" || true; done
  for p in $(seq 5202 5209); do
    b=$(jq -r '.end.sum_received.bits_per_second // 0' "$TMP/many-$tag-$p.json" 2>/dev/null) || b=0
    s=$(jq -r '.start.connected // [] | length' "$TMP/many-$tag-$p.json" 2>/dev/null) || s=0
    if [ "${b:-0}" = 0 ]; then
      MANY_FAILED=$((MANY_FAILED + 1))
      log "  client :$p: $(jq -r '.error // "no result"' "$TMP/many-$tag-$p.json" 2>/dev/null | head -1)"
    fi
    MANY_BPS=$(jq -n --argjson a "$MANY_BPS" --argjson b "${b:-0}" '$a + $b') MANY_N=$((MANY_N + ${s:-0}))
  done
  log "  $tag: $(gbit "$MANY_BPS") Gbit/s, $MANY_N streams connected, $MANY_FAILED of 8 clients failed; 6 s in: $MANY_EST sockets established, connect RSS $MANY_RSS MB"
}

do_scale() {
  local p srv=() p8 ns dir label tag rflag r n per pers
  for p in $(seq 5202 5209); do
    ip netns exec $POD timeout 1800 iperf3 -s -B $POD_IP -p "$p" >"$TMP/iperf-s-$p.log" 2>&1 </dev/null &
    srv+=($!) PIDS+=($!)
  done
  for _ in $(seq 50); do
    [ "$(nsx $POD ss -Hltn '( sport >= :5202 and sport <= :5209 )' | wc -l)" -ge 8 ] && break
    sleep 0.2
  done
  for ns in $LAP $GW; do
    # through the method: the smaller counts of CL_LADDER first (where the method breaks,
    # if it does), then 8 × $PER; the kernel-only control only at 8 × $PER
    if [ "$ns" = $LAP ]; then label="$METHOD" tag=m pers="$LADDER $PER"; else label="control: pb-gw → pod, kernel only" tag=k pers=$PER; fi
    for dir in up down; do
      rflag=()
      [ $dir = down ] && rflag=(-R)
      sleep 2
      log "scale ($label), $dir: iperf3 -P 8 -t 5 (pod:5201)"
      p8=$(iperf "$ns" 5201 "$TMP/p8-$tag-$dir.json" -P 8 -t 5 "${rflag[@]}")
      log "  8 streams: $(gbit "$p8") Gbit/s"
      for per in $pers; do
        n=$((8 * per))
        sleep 2
        log "scale ($label), $dir: 8 × iperf3 -P $per -t 10 at once ($n streams)"
        many "$ns" "$tag-$dir-$n" "$per" "${rflag[@]}"
        r=$(ratio "$MANY_BPS" "$p8")
        if [ "$ns" = $LAP ]; then
          row "$dir: 8 streams → $n streams (Gbit/s; $MANY_N connected, $MANY_FAILED/8 clients failed; connect RSS $MANY_RSS MB 6 s in)" \
            "$(gbit "$p8") → $(gbit "$MANY_BPS") ($r)" "$([ "$per" = "$PER" ] && echo "≥ 0.9")" \
            "$([ "$per" = "$PER" ] && holds "$r" '>=' 0.9)"
        else
          row "control $dir (pb-gw → pod, no method): 8 → $n streams (Gbit/s; $MANY_FAILED/8 failed)" \
            "$(gbit "$p8") → $(gbit "$MANY_BPS") ($r)"
        fi
      done
    done
  done
  for p in "${srv[@]}"; do stop "$p"; done
}

# ------------------------------------------------------------------- memory ---
do_memory() {
  local holder opener pre c a rc_max=- ra_max=- est_pod=- est_lap=- opened=- still=- _
  cat >"$TMP/holder.py" <<'EOF'
# Accepts TCP connections and holds them open (reads until EOF), for at most LIFE seconds.
import asyncio, resource, sys
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
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
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
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
                      "open_secs": round(time.monotonic() - t0, 2),
                      "nofile": hard}), flush=True)
    await asyncio.sleep(hold)
    alive = sum(1 for r, _ in conns if not r.at_eof())
    print(json.dumps({"event": "held", "still_open": alive}), flush=True)
    for _, w in conns:
        w.close()
    await asyncio.sleep(0.5)
asyncio.run(main())
EOF
  sleep 2
  pre=$(rss "$CONNECT")
  log "memory: holder on $POD_IP:$HOLD_PORT, $HOLD_N connections from pb-lap (≤ 200 connecting at once, ≤ 120 s), held 12 s"
  ip netns exec $POD timeout 300 python3 "$TMP/holder.py" $POD_IP $HOLD_PORT 280 >"$TMP/holder.log" 2>&1 </dev/null &
  holder=$!
  PIDS+=("$holder")
  for _ in $(seq 50); do nsx $POD ss -Hltn "sport = :$HOLD_PORT" | grep -q . && break; sleep 0.2; done
  ip netns exec $LAP timeout 200 python3 "$TMP/opener.py" $POD_IP $HOLD_PORT "$HOLD_N" 200 120 12 >"$TMP/opener.log" 2>&1 </dev/null &
  opener=$!
  PIDS+=("$opener")
  for _ in $(seq 1400); do
    grep -q '"holding"' "$TMP/opener.log" && break
    alive "$opener" || break
    sleep 0.1
  done
  if grep -q '"holding"' "$TMP/opener.log"; then
    opened=$(grep '"holding"' "$TMP/opener.log" | jq -r '.open')
    log "  opener: $(grep '"holding"' "$TMP/opener.log")"
    sleep 3 # the far ends' opens finish
    for _ in 1 2 3 4 5; do
      c=$(rss "$CONNECT") a=$(rss "$AGENT")
      rc_max=$(printf '%s\n%s\n' "$rc_max" "$c" | grep -v '^-$' | sort -g | tail -1) || rc_max=-
      ra_max=$(printf '%s\n%s\n' "$ra_max" "$a" | grep -v '^-$' | sort -g | tail -1) || ra_max=-
      sleep 1
    done
    est_pod=$(nsx $POD ss -Htn state established "( sport = :$HOLD_PORT )" | wc -l)
    est_lap=$(nsx $LAP ss -Htn state established "( dst $POD_IP and dport = :$HOLD_PORT )" | wc -l)
    log "  held: connect RSS $rc_max MB (VmHWM $(vm "$CONNECT" VmHWM)), agent RSS $ra_max MB; established: $est_lap laptop sockets to :$HOLD_PORT, $est_pod at the pod; conntrack laptop $(ct_count $LAP), gateway $(ct_count $GW)"
    status_lines
  else
    log "  the opener did not report: $(tail -3 "$TMP/opener.log")"
  fi
  wait "$opener" || true
  still=$(grep '"held"' "$TMP/opener.log" | jq -r '.still_open') || true
  still=${still:--}
  log "  after the hold: $still still open at the opener; closed"
  stop "$holder"
  row "connect RSS idle at start / before the hold (MB)" "$RSS_IDLE_C / $pre"
  row "connect RSS, $HOLD_N connections held (MB, max of 5 samples)" "$rc_max" "≤ 200" "$(holds "${rc_max/#-/1e9}" '<=' 200)"
  row "connections opened / established at the laptop / at the pod / open after 12 s" "$opened / $est_lap / $est_pod / $still" "$HOLD_N"
  row "agent RSS idle at start / $HOLD_N held (MB)" "$RSS_IDLE_A / $ra_max"
}

CHURN_LINE=""
# memory before scale: the bulk runs grow connect's heap, which it keeps afterwards
step churn && do_churn
step memory && do_memory
step scale && do_scale
sleep 5
RSS_END_C=$(rss "$CONNECT") RSS_END_A=$(rss "$AGENT")
log "idle at the end: connect RSS $RSS_END_C MB (VmHWM $(vm "$CONNECT" VmHWM)), agent RSS $RSS_END_A MB; connect status:"
status_lines
row "RSS idle at the end: connect / agent (MB)" "$RSS_END_C / $RSS_END_A"
dmesg_new=$(dmesg 2>/dev/null | tail -n +"$((dmesg_before + 1))" | grep -iE 'conntrack|table full|dropping|oom' | head -5) || true
carrier=$(grep -ciE 'reconnect|carrier (lost|down|dead)|session (lost|down)' "$STATE_DIR/logs/kubelan-connect.log" 2>/dev/null) || carrier=0

# ------------------------------------------------------------------ summary ---
cat <<EOF

## connect-load: $METHOD ($BIN), $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) vCPU, $(($(date +%s) - T0)) s

${CHURN_LINE:+$CHURN_LINE
}
| metric | value | target | holds |
|---|---|---|---|
$(printf '%s\n' "${ROWS[@]}")

dmesg (conntrack, drops, OOM) during the run: ${dmesg_new:-none}
connect log lines about reconnects / a lost carrier: $carrier
raw files and logs: $TMP
EOF
