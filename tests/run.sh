#!/usr/bin/env bash
# tests/run.sh — the whole test suite, from a fresh Debian 12 machine to a verdict:
# dependencies, formatting, lints, unit and property tests, then two Ceph labs up (instance 0
# with three sites, site-a, site-b and site-c; instance 1 with site-a and site-b:
# tests/lab/README.md), every integration test against them in two streams side by side
# (one lab each), the deployment artefacts tried for real on instance 0 (the Debian package
# and systemd unit, the monitoring rules and dashboard with a real Prometheus, the container
# image), and the labs down again (on failure too).
#
#   RBD_MIRROR_LAB_KEEP=1 tests/run.sh   leave the labs running afterwards
#   RBD_MIRROR_LAB_DIR=/path             instance 0's state directory (default
#                                        /tmp/rbd-mirror-rs-lab; instance 1's is always
#                                        /tmp/rbd-mirror-rs-lab1)
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

step "lab up: two instances, for the integration tests' two streams"
# Instances 0 and 1, whatever the caller's environment says (the deploy tests use instance 0).
export RBD_MIRROR_LAB_INSTANCE=0
lab_down() {
  if [[ ${RBD_MIRROR_LAB_KEEP:-0} != 1 ]]; then
    step "lab down"
    tests/lab/lab.sh down || true
    env -u RBD_MIRROR_LAB_DIR RBD_MIRROR_LAB_INSTANCE=1 tests/lab/lab.sh down || true
  fi
}
trap lab_down EXIT
# Waits for the two instances' background jobs (lab 0's, then lab 1's); sets rc0 and rc1.
wait_both() {
  rc0=0 rc1=0
  wait "$1" || rc0=$?
  wait "$2" || rc1=$?
}
# Instance 0 (127.0.0.x) with site-c for three_sites.rs (~1.2 GiB for the three sites;
# site-a's second peer, site-c, only while a three_sites.rs test runs: the other tests see
# the two-site lab); instance 1 (127.0.1.x) with site-a and site-b. Brought up side by side.
RBD_MIRROR_LAB_SITES="site-a site-b site-c" tests/lab/lab.sh up 2>&1 | sed -u 's/^/[lab0] /' &
up0=$!
env -u RBD_MIRROR_LAB_DIR RBD_MIRROR_LAB_INSTANCE=1 RBD_MIRROR_LAB_SITES="site-a site-b" tests/lab/lab.sh up 2>&1 | sed -u 's/^/[lab1] /' &
up1=$!
wait_both $up0 $up1
((rc0 == 0 && rc1 == 0)) || { echo "lab up failed: lab 0 exit $rc0, lab 1 exit $rc1" >&2; exit 1; }

step "integration tests against the lab: two streams, one per lab instance"
# Built once, before the streams start (a cargo test that finds them built only runs them).
cargo test --workspace --locked --test '*' --no-run
# Each stream runs its test binaries one after the other against its own lab; each binary's
# tests run one at a time (support/mirror.rs's serial guard). Instance 1 takes these daemon
# test files (about half of the time); instance 0 every other one, new ones included, and
# the other crates' integration tests. Each line is prefixed with its lab.
stream1_files=(journal_mirroring ha fault_storms admin_socket pools_and_namespaces daemon_options check)
stream0_args=() stream1_args=()
for f in crates/daemon/tests/*.rs; do
  name=$(basename "$f" .rs)
  if [[ " ${stream1_files[*]} " == *" $name "* ]]; then stream1_args+=(--test "$name"); else stream0_args+=(--test "$name"); fi
done
((${#stream1_args[@]} == 2 * ${#stream1_files[@]})) || { echo "tests/run.sh: a file of stream1_files is gone" >&2; exit 1; }
stream0() {
  export RBD_MIRROR_LAB_INSTANCE=0
  cargo test --workspace --exclude daemon --locked --test '*' -- --show-output
  cargo test -p daemon --locked "${stream0_args[@]}" -- --show-output
}
stream1() {
  export RBD_MIRROR_LAB_INSTANCE=1
  unset RBD_MIRROR_LAB_DIR
  cargo test -p daemon --locked "${stream1_args[@]}" -- --show-output
}
(set -e; stream0) 2>&1 | sed -u 's/^/[lab0] /' &
test0=$!
(set -e; stream1) 2>&1 | sed -u 's/^/[lab1] /' &
test1=$!
wait_both $test0 $test1
step "integration tests: lab 0 exit $rc0, lab 1 exit $rc1"
((rc0 == 0 && rc1 == 0)) || { echo "integration tests failed (look for 'FAILED' or 'panicked' with the [labN] prefix)" >&2; exit 1; }

step "deploy: the Debian package and its systemd unit"
tests/deploy/systemd.sh

step "deploy: alert rules, dashboard, a real Prometheus against the lab"
tests/deploy/monitoring.sh

step "deploy: the container image (build, inspect, run from its filesystem against the lab)"
tests/deploy/container.sh

step "all tests passed"
