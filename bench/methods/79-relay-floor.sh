# shellcheck shell=bash
# A floor, not a product: the cheapest two-hop TCP relay we know how to build on this
# topology, to tell what any design that terminates TCP twice (a local listener on the
# laptop, a relay next to the pods) costs in latency before it does anything else.
# HAProxy in TCP mode, one thread per hop, on the laptop (127.0.0.1:1808x) and on the
# gateway (its laptop-side address, 2808x), a fixed port map each: no encryption, no mux,
# no original-destination lookup, no policy. The laptop client connects to 127.0.0.1, so
# ClusterIP and DNS checks do not apply (as for `socat`). Compare its p50 with `direct`
# and `kubelan-connect` in the same run.
M_NAME=relay-floor
M_DESC="two HAProxy TCP relays (laptop -> gateway -> pod), no crypto, no mux: the latency floor of terminating TCP twice"

# shellcheck source=settle.inc
source "$(dirname "${BASH_SOURCE[0]}")/settle.inc"

m_available() { need haproxy; }

rf_config() { # rf_config BIND_HOST TARGET_HOST PAIRS... (PAIR = listen:target)
  local bind=$1 target=$2 pair
  shift 2
  printf 'global\n  nbthread 1\n  maxconn 8000\n\n'
  printf 'defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 120s\n  timeout server 120s\n\n'
  for pair in "$@"; do
    printf 'listen p%s\n  bind %s:%s\n  server s %s:%s\n\n' \
      "${pair%%:*}" "$bind" "${pair%%:*}" "$target" "${pair#*:}"
  done
}

m_setup() {
  settle_pod_timewait
  # bench/connect-streams.sh asks for its iperf3 ports too (RF_PORTS="5202-5301"): laptop
  # 1xxxx -> gateway 2xxxx -> pod xxxx, as for the harness's own ports.
  local extra_gw=() extra_lap=() q
  if [[ ${RF_PORTS:-} =~ ^([0-9]{4})-([0-9]{4})$ ]]; then
    for q in $(seq "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"); do
      extra_gw+=("2$q:$q") extra_lap+=("1$q:2$q")
    done
  fi
  M_VERSION="$(haproxy -v 2>/dev/null | sed -n '1s/^HAProxy version \([^ ]*\).*/HAProxy \1/p'), nbthread 1 per hop"
  rf_config "$GW_LAP_IP" "$POD_IP" 28080:$HTTP_PORT 25201:$IPERF_PORT 29000:$SINK_PORT 29001:$SOURCE_PORT \
    "${extra_gw[@]}" >"$STATE/relay-floor-gw.cfg"
  rf_config 127.0.0.1 "$GW_LAP_IP" 18080:28080 15201:25201 19000:29000 19001:29001 \
    "${extra_lap[@]}" >"$STATE/relay-floor-lap.cfg"
  spawn $GW relay-floor-gw haproxy -db -f "$STATE/relay-floor-gw.cfg"
  local gw=$LAST_PID
  spawn $LAP relay-floor-lap haproxy -db -f "$STATE/relay-floor-lap.cfg"
  CPU_PIDS="$gw $LAST_PID"
  local p
  for p in 28080 25201 29000 29001; do wait_listen $GW $p || return 1; done
  for p in 18080 15201 19000 19001; do wait_listen $LAP $p || return 1; done
  T_HOST=127.0.0.1 T_HTTP_PORT=18080 T_IPERF_PORT=15201 T_SINK_PORT=19000 T_SOURCE_PORT=19001
  M_CHECK_SVC=0
}

m_teardown() { :; }
