# shellcheck shell=bash
# The harness's ss-local, started on a settled pod (see settle.inc).
# shellcheck source=settle.inc
source "$(dirname "${BASH_SOURCE[0]}")/settle.inc"
M_NAME=ss-local-settled
settled_peer 31-ss-local.sh
