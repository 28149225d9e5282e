#!/usr/bin/env bash
# deploy/systemd/setup-site.sh CLUSTER ID FSID MON_HOST KEYRING
# What an operator does at the secondary site before `systemctl enable --now
# rbd-mirror-rs@ID` (the package installed): the local cluster's /etc/ceph/CLUSTER.conf
# (fsid and mon host; an existing conf is kept as it is), the client's keyring as
# /etc/ceph/CLUSTER.client.ID.keyring (ceph:ceph 0600: the daemon reads it as ceph), and
# CLUSTER in /etc/default/rbd-mirror-rs. The peer needs nothing here: `rbd mirror pool peer
# bootstrap import` keeps its key in the local monitors' config store.
# Run by tests/deploy/systemd.sh (on the lab) and vagrant/provision.sh (site-b's VM).
set -euo pipefail
(($# == 5)) || { echo "usage: $0 CLUSTER ID FSID MON_HOST KEYRING" >&2; exit 2; }
cluster=$1 id=$2 fsid=$3 mon_host=$4 keyring=$5
[[ -f $keyring ]] || { echo "setup-site: no keyring at $keyring" >&2; exit 1; }
id ceph >/dev/null 2>&1 || { echo "setup-site: no ceph user (install ceph-common)" >&2; exit 1; }

conf=/etc/ceph/$cluster.conf
if [[ -e $conf ]]; then
  echo "setup-site: keeping the existing $conf" >&2
else
  install -d -m 0755 /etc/ceph
  cat >"$conf" <<CONF
[global]
fsid = $fsid
mon host = $mon_host
CONF
  echo "setup-site: wrote $conf" >&2
fi
install -m 0600 -o ceph -g ceph "$keyring" "/etc/ceph/$cluster.client.$id.keyring"

defaults=/etc/default/rbd-mirror-rs
touch "$defaults"
if grep -qE '^#?CLUSTER=' "$defaults"; then
  sed -i -E "s|^#?CLUSTER=.*|CLUSTER=$cluster|" "$defaults"
else
  echo "CLUSTER=$cluster" >>"$defaults"
fi
echo "setup-site: $defaults: CLUSTER=$cluster; start with: systemctl enable --now rbd-mirror-rs@$id" >&2
