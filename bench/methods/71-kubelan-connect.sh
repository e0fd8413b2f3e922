# shellcheck shell=bash
# kubelan connect -> kubelan agent on the gateway over the direct carrier (TCP + mutual TLS
# 1.3 + kubelan's multiplexer). Transparent: clients connect to Pod/Service IPs directly,
# like boringtun or sshuttle. TCP is terminated by the laptop's kernel (nftables redirect
# to connect's listener, as ss-redir); UDP, ICMP and DNS go through the TUN and the
# userspace stack (smoltcp). The agent runs
# standalone with the harness's CIDRs; connect gets the same CIDRs by flag.
#
# The harness owns the laptop's resolver (it already points at the cluster DNS IP), so
# connect runs with --no-dns; it still answers DNS to that IP through the tunnel. Its
# journal goes to the harness's state folder, not the machine's /run/kubelan.
M_NAME=kubelan-connect
M_DESC="kubelan connect (TCP: nft redirect, kernel TCP; UDP: TUN + smoltcp) -> kubelan agent (direct mTLS + kubelan mux)"
# shellcheck source=kubelan-common.inc
source "$(dirname "${BASH_SOURCE[0]}")/kubelan-common.inc"

m_available() { kl_available; }

kl_tun_routed() { ip -n $LAP route show dev pbkl0 2>/dev/null | grep -q "$POD_CIDR"; }

m_setup() {
  M_VERSION="$("$KL_BIN" --version), TCP redirected by nftables, TUN mtu 1400 + smoltcp for UDP, TLS 1.3 (rustls ring), kubelan mux"
  kl_agent || return 1
  local agent=$KL_AGENT_PID
  mkdir -p "$STATE/kubelan-state"
  spawn $LAP kubelan-connect "${KL_ENV[@]}" KUBELAN_STATE_DIR="$STATE/kubelan-state" \
    "$KL_BIN" connect --agent $GW_LAP_IP:7443 --credentials "$STATE/kubelan-creds" \
    --pod-cidr $POD_CIDR --service-cidr $SVC_CIDR --cluster-dns $SVC_DNS_IP \
    --no-dns --tun pbkl0
  CPU_PIDS="$agent $LAST_PID"
  wait_until 20 kl_tun_routed || return 1
}

m_teardown() {
  # connect restores its routes on SIGTERM; the TUN vanishes with the process. A journal
  # left by a crash is replayed here so nothing outlives the run.
  KUBELAN_STATE_DIR="$STATE/kubelan-state" nsx $LAP "$KL_BIN" reset >/dev/null 2>&1 || true
}
