#!/usr/bin/env bash
# Builds the Debian package (cargo-deb): the kubelan binary, the kubectl-lan link, man
# pages and bash/zsh/fish completions generated from that binary, the gateway's systemd
# unit template and docs. Prints the .deb's path on its last line.
#
#   ./scripts/package.sh                   release build, then package it
#   ./scripts/package.sh --profile dev --no-build --fast
#                                          package the binary `cargo test` built (CI checks
#                                          the packaging without a second, 6-minute build;
#                                          --fast: lighter compression, 9 s instead of 30)
#
# Needs cargo-deb (`cargo install cargo-deb --locked`) and dpkg-dev; docs/packaging.md.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
build=1
fast=()
while (($#)); do
  case "$1" in
    --profile) profile=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --fast) fast=(--fast); shift ;;
    *) echo "usage: $0 [--profile NAME] [--no-build] [--fast]" >&2; exit 2 ;;
  esac
done
if ! cargo deb --version >/dev/null 2>&1; then
  echo "cargo-deb is not installed: cargo install cargo-deb --locked" >&2
  exit 1
fi
if ((build)); then
  cargo build -p kubelan --locked --profile "$profile"
fi
target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
case "$profile" in dev) profile_dir=debug ;; *) profile_dir=$profile ;; esac
bin="$target_dir/$profile_dir/kubelan"
if [ ! -x "$bin" ]; then
  echo "$bin does not exist: build it first, or leave out --no-build" >&2
  exit 1
fi

# Generated from the binary being packaged, so they match its flags exactly. Cargo.toml's
# assets name them as target/release/deb-assets/… (cargo-deb maps that to this profile).
assets="$target_dir/$profile_dir/deb-assets"
rm -rf "$assets"
mkdir -p "$assets/completions"
"$bin" man "$assets/man"
gzip -9n "$assets/man"/*.1 # Debian policy: compressed, without a timestamp
# The scripts call the binary by the absolute path they were generated with: make it
# the installed one.
for shell in bash zsh fish; do
  "$bin" completion "$shell" | sed "s|$bin|/usr/bin/kubelan|g" >"$assets/completions/$shell"
  if grep -qF "$bin" "$assets/completions/$shell" || ! grep -qF /usr/bin/kubelan "$assets/completions/$shell"; then
    echo "the $shell completion does not call /usr/bin/kubelan" >&2
    exit 1
  fi
done
mv "$assets/completions/bash" "$assets/completions/kubelan.bash"
mv "$assets/completions/fish" "$assets/completions/kubelan.fish"
# zsh autoloads vendor-completions/_kubelan as the function _kubelan on the first Tab: the
# script defines and registers the real completer, which must then also answer that Tab.
{ cat "$assets/completions/zsh"; echo '_clap_dynamic_completer_kubelan "$@"'; } >"$assets/completions/_kubelan"
rm "$assets/completions/zsh"

# cargo-deb strips the binary; it warns that dev profiles are for testing only.
cargo deb -p kubelan --no-build --profile "$profile" "${fast[@]}" 2>&1 >"$assets/deb-path" | sed 's/^/cargo-deb: /' >&2
deb=$(tail -n 1 "$assets/deb-path")
echo "$deb"
