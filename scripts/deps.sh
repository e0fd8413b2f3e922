#!/usr/bin/env bash
# Installs the Debian packages kubelan's lab and tests use, and cargo-deb (idempotent; needs root).
set -euo pipefail
PACKAGES=(iproute2 nftables dnsmasq-base curl iperf3 bind9-dnsutils iputils-ping socat procps ca-certificates python3 etcd-server etcd-client zsh fish man-db groff-base lintian dpkg-dev systemd)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# kubectl (tests run it as kubectl's plugin host): Debian's kubernetes-client, unless a
# kubectl from another package is already installed.
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Packages must not start their services on this machine (etcd-server would): the tests
  # start etcd themselves, inside lab pods. A policy-rc.d that refuses, for this install only.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "Rust is not installed: install it with rustup (https://rustup.rs), then run this again." >&2
  exit 1
fi
# cargo-deb builds the .deb (scripts/package.sh, tests/deb.rs); 3.8.0 is the version we test
# with (it needs Rust 1.85). About 1.5 minutes to build on 2 cores, once.
if ! command -v cargo-deb >/dev/null 2>&1; then
  echo "installing cargo-deb"
  cargo install cargo-deb --version 3.8.0 --locked
fi
