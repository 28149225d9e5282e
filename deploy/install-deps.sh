#!/usr/bin/env bash
# deploy/install-deps.sh — everything rbd-mirror-rs needs on Debian 12, installed only when
# missing: the Ceph Pacific packages (daemons for the lab, CLI, librados/librbd headers and
# libraries, librados' C++ headers for rados-ffi's shim), the lab's small tools, C and C++
# compilers, iptables (net_faults.rs cuts the daemon off from a cluster with its cgroup match)
# and the pinned Rust toolchain (rustup).
# Idempotent; needs root (or sudo) only when something is missing.
set -euo pipefail

PACKAGES=(ceph-mon ceph-osd ceph-mgr ceph-common rbd-mirror librados-dev librbd-dev libradospp-dev
  jq uuid-runtime gcc g++ make libc6-dev curl ca-certificates iptables)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}" >&2
  sudo=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null || { echo "install-deps: need root to install ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
  fi
  "${sudo[@]}" apt-get update
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
fi

# Rust: rustup reads rust-toolchain.toml, so `cargo` in this tree uses the pinned release.
if ! command -v cargo >/dev/null && [[ ! -x $HOME/.cargo/bin/cargo ]]; then
  echo "install-deps: installing Rust (rustup, minimal profile)" >&2
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
    sh -s -- -y --profile minimal --default-toolchain none
fi
echo "install-deps: ok ($(dpkg-query -W -f='${Version}' ceph-common) ceph, $("$HOME"/.cargo/bin/rustup --version 2>/dev/null | head -1 || command -v cargo))" >&2
