#!/usr/bin/env bash
# tests/run.sh — the whole test suite, from a fresh Debian 12 machine to a verdict:
# dependencies, formatting, lints, unit and property tests, then the Ceph lab up with its
# three sites (site-a, site-b, site-c: tests/lab/README.md), every integration test against
# it, the deployment artefacts tried for real on it (the Debian package and systemd unit, the
# monitoring rules and dashboard with a real Prometheus, the container image), and the lab
# down again (on failure too).
#
#   RBD_MIRROR_LAB_KEEP=1 tests/run.sh   leave the lab running afterwards
#   RBD_MIRROR_LAB_DIR=/path             lab state directory (default /tmp/rbd-mirror-rs-lab)
#   RBD_MIRROR_FAULT_KILLS=20 tests/run.sh   the kill -9 storms of fault_storms.rs with 20 kills
#                                        each (default 5; alone, 7-8 min on the lab:
#                                        RBD_MIRROR_FAULT_KILLS=20 cargo test -p daemon
#                                        --test fault_storms -- --nocapture storm)
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/install-deps.sh
# shellcheck disable=SC1091
[[ -f $HOME/.cargo/env ]] && source "$HOME/.cargo/env"

step() { printf '\n==== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

step "toolchain"
cargo --version && rustc --version
rustup component add rustfmt clippy >/dev/null 2>&1 || true

step "format"
cargo fmt --all --check

step "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "unsafe only in rados-ffi"
if grep -rn --include='*.rs' -E '\bunsafe\b' crates | grep -v '^crates/rados-ffi/' | grep -v 'forbid(unsafe_code)'; then
  echo "unsafe code outside crates/rados-ffi" >&2; exit 1
fi

step "unit and property tests"
cargo test --workspace --locked --lib --bins

step "lab up"
lab_down() {
  if [[ ${RBD_MIRROR_LAB_KEEP:-0} != 1 ]]; then step "lab down"; tests/lab/lab.sh down || true; fi
}
trap lab_down EXIT
# site-c for three_sites.rs (~1.2 GiB for the three sites; site-a's second peer, site-c,
# only while a three_sites.rs test runs: the other tests see the two-site lab)
RBD_MIRROR_LAB_SITES="site-a site-b site-c" tests/lab/lab.sh up

step "integration tests against the lab"
cargo test --workspace --locked --test '*' -- --show-output

step "deploy: the Debian package and its systemd unit"
tests/deploy/systemd.sh

step "deploy: alert rules, dashboard, a real Prometheus against the lab"
tests/deploy/monitoring.sh

step "deploy: the container image (build, inspect, run from its filesystem against the lab)"
tests/deploy/container.sh

step "all tests passed"
