# shellcheck shell=bash
# The harness's ss-redir, started on a settled pod (see settle.inc).
# shellcheck source=settle.inc
source "$(dirname "${BASH_SOURCE[0]}")/settle.inc"
M_NAME=ss-redir-settled
settled_peer 30-ss-redir.sh
