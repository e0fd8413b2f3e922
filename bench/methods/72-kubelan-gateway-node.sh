# shellcheck shell=bash
# kubelan gateway --mode node on the gateway (the "node"): the laptop routes the pod and
# service CIDRs via the gateway exactly as in `direct`, and `kubelan gateway` adds its own
# nftables table (counting forward chain + SNAT for the laptop's LAN). Kernel path only;
# the target is >= 0.9x `direct` in the same run. Facts come from flags (no Kubernetes API
# in the harness); --no-dns keeps the harness's resolver path identical to `direct`.
M_NAME=kubelan-gateway-node
M_DESC="kubelan gateway --mode node: kernel forwarding + kubelan nft table (SNAT, counters)"
# shellcheck source=kubelan-common.inc
source "$(dirname "${BASH_SOURCE[0]}")/kubelan-common.inc"

m_available() { kl_available; }

kl_gw_table() { ip netns exec $GW nft list table ip kubelan >/dev/null 2>&1; }

m_setup() {
  M_VERSION="$("$KL_BIN" --version), nft $(nft --version | awk '{print $2}')"
  mkdir -p "$STATE/kubelan-gw-state"
  spawn $GW kubelan-gateway "${KL_ENV[@]}" KUBELAN_STATE_DIR="$STATE/kubelan-gw-state" \
    "$KL_BIN" gateway --mode node --lan ${LAP_IP%.*}.0/24 \
    --pod-cidr $POD_CIDR --service-cidr $SVC_CIDR --cluster-dns $SVC_DNS_IP --no-dns
  CPU_PIDS="$LAST_PID"
  wait_until 20 kl_gw_table || return 1
  ip -n $LAP route add $POD_CIDR via $GW_LAP_IP
  ip -n $LAP route add $SVC_CIDR via $GW_LAP_IP
}

m_teardown() {
  ip -n $LAP route del $POD_CIDR via $GW_LAP_IP 2>/dev/null
  ip -n $LAP route del $SVC_CIDR via $GW_LAP_IP 2>/dev/null
  # The gateway removes its table on SIGTERM; a crash leaves a journal, replayed here.
  KUBELAN_STATE_DIR="$STATE/kubelan-gw-state" nsx $GW "$KL_BIN" reset >/dev/null 2>&1 || true
  return 0
}
