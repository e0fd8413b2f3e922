# shellcheck shell=bash
# kubelan proxy (SOCKS5 on the laptop) -> kubelan agent (the "in-cluster" side, on the
# gateway) over the direct carrier: TCP + mutual TLS 1.3 (rustls, ring) + yamux. The
# agent runs standalone (no Kubernetes API) with the harness's CIDRs and cluster DNS, so
# this measures exactly the data path `kubelan proxy` uses against a real cluster.
# Clients speak SOCKS5 (pbclient --socks, curl --socks5-hostname), like ss-local.
#
# Run from the peer harness with PB_EXTRA_METHODS=/abs/path/to/kubelan/bench/methods.
# KUBELAN_BIN picks the binary (default: this repo's target/release/kubelan).
M_NAME=kubelan-proxy
M_DESC="kubelan proxy SOCKS5 -> kubelan agent (direct mTLS + yamux)"
KL_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
KL_BIN="${KUBELAN_BIN:-$KL_REPO/target/release/kubelan}"

m_available() {
  [ -x "$KL_BIN" ] || { echo "no kubelan binary at $KL_BIN (cargo build --release, or set KUBELAN_BIN)"; return 1; }
}

m_setup() {
  M_VERSION="$("$KL_BIN" --version), TLS 1.3 AES-256-GCM/ChaCha20 (rustls ring), yamux"
  [ -f "$STATE/kubelan-creds/ca.crt" ] ||
    "$KL_BIN" agent --init-credentials "$STATE/kubelan-creds" >/dev/null || return 1
  # KL_THREADS: tokio worker threads per process (default: one per CPU).
  local env=(env ${KL_THREADS:+TOKIO_WORKER_THREADS=$KL_THREADS})
  spawn $GW kubelan-agent "${env[@]}" "$KL_BIN" agent --standalone \
    --listen-tls $GW_LAP_IP:7443 --credentials "$STATE/kubelan-creds" \
    --pod-cidr $POD_CIDR --service-cidr $SVC_CIDR --dns-server $SVC_DNS_IP:53
  local agent=$LAST_PID
  wait_listen $GW 7443 || return 1
  spawn $LAP kubelan-proxy "${env[@]}" "$KL_BIN" proxy --listen 127.0.0.1:1081 \
    --agent $GW_LAP_IP:7443 --credentials "$STATE/kubelan-creds"
  CPU_PIDS="$agent $LAST_PID"
  wait_listen $LAP 1081 || return 1
  SOCKS=127.0.0.1:1081
}
