//! How a peer cluster is reached, exactly as the stock daemon reaches it.

use std::time::Duration;

use rados_ffi::rbd::MirrorPeerSite;
use rados_ffi::{ClusterConfig, IoCtx, Result};

/// The connection settings of `peer` (a peer record of the pool `io` is on): its stored
/// `mon_host` + key when `rbd mirror pool peer bootstrap import` (or `peer add
/// --remote-mon-host --remote-key-file`) recorded them, else `<site>.conf` and the client's
/// keyring on Ceph's default search path.
pub async fn peer_cluster_config(
    io: &IoCtx,
    peer: &MirrorPeerSite,
    connect_timeout: Duration,
) -> Result<ClusterConfig> {
    let client_id = peer.client_name.strip_prefix("client.").unwrap_or(&peer.client_name).to_owned();
    let attrs = io.mirror_peer_attributes(&peer.uuid).await?;
    let mut cfg = match (&attrs.mon_host, &attrs.key) {
        (Some(mon_host), Some(key)) => ClusterConfig::peer(&peer.site_name, &client_id, mon_host, key),
        _ => ClusterConfig::local(&peer.site_name, None, &client_id),
    };
    cfg.connect_timeout = connect_timeout;
    Ok(cfg)
}
