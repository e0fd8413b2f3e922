# shellcheck shell=bash
# kubelan proxy (SOCKS5 on the laptop) -> kubelan agent (the "in-cluster" side, on the
# gateway) over the direct carrier: TCP + mutual TLS 1.3 (rustls, ring) + kubelan's multiplexer. The
# agent runs standalone (no Kubernetes API) with the harness's CIDRs and cluster DNS, so
# this measures exactly the data path `kubelan proxy` uses against a real cluster.
# Clients speak SOCKS5 (pbclient --socks, curl --socks5-hostname), like ss-local.
#
# Run from the peer harness with PB_EXTRA_METHODS=/abs/path/to/kubelan/bench/methods.
# KUBELAN_BIN picks the binary (default: this repo's target/release/kubelan).
M_NAME=kubelan-proxy
M_DESC="kubelan proxy SOCKS5 -> kubelan agent (direct mTLS + kubelan mux)"
# shellcheck source=kubelan-common.inc
source "$(dirname "${BASH_SOURCE[0]}")/kubelan-common.inc"

m_available() { kl_available; }

m_setup() {
  M_VERSION="$("$KL_BIN" --version), TLS 1.3 AES-256-GCM/ChaCha20 (rustls ring), kubelan mux"
  kl_agent || return 1
  local agent=$KL_AGENT_PID
  spawn $LAP kubelan-proxy "${KL_ENV[@]}" "$KL_BIN" proxy --listen 127.0.0.1:1081 \
    --agent $GW_LAP_IP:7443 --credentials "$STATE/kubelan-creds" "${KL_THREAD_ARGS[@]}"
  CPU_PIDS="$agent $LAST_PID"
  wait_listen $LAP 1081 || return 1
  SOCKS=127.0.0.1:1081
}
