#!/usr/bin/env bash
# Runs every test: unit tests, the API simulator's kube-rs tests, and the end-to-end tests on
# the lab (network namespaces; needs root). Usage: sudo ./scripts/test.sh [cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "the end-to-end tests build network namespaces: run as root (sudo $0)" >&2
  exit 1
fi
./scripts/deps.sh
export KUBELAN_E2E_REQUIRED=1
cargo test --workspace --locked "$@"
