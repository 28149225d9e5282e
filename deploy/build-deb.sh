#!/usr/bin/env bash
# deploy/build-deb.sh — builds the Debian package of rbd-mirror-rs with cargo-deb (installed
# first when missing): /usr/bin/rbd-mirror-rs (stripped), the systemd unit template
# rbd-mirror-rs@.service and rbd-mirror-rs.target, /etc/default/rbd-mirror-rs, a sample conf
# and the operator's manual. Prints the path of the .deb. Install it with
#   apt-get install ./target/debian/rbd-mirror-rs_<version>_amd64.deb
# (its dependencies: ceph-common, librados2, librbd1). The packaging is described by
# [package.metadata.deb] in crates/daemon/Cargo.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
[[ -f $HOME/.cargo/env ]] && source "$HOME/.cargo/env"
CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version 2>/dev/null | grep -qF "$CARGO_DEB_VERSION"; then
  echo "build-deb: installing cargo-deb $CARGO_DEB_VERSION" >&2
  cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION" >&2
fi
cargo deb -p daemon --locked --strip "$@" | tail -1
