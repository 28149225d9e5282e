//! Discovery: which pools of the local cluster are mirrored, from which peers, and how a peer
//! is reached: exactly as the stock daemon reaches it (ceph-formats.md §5.1). Shared by the
//! pool replayers, `rbd-mirror-rs check` and the DR commands to come.

use std::time::Duration;

use rados_ffi::rbd::MirrorPeerSite;
use rados_ffi::{ClusterConfig, IoCtx, Rados, RadosError, Result};
use rbd_types::MirrorMode;

/// A pool of the local cluster with mirroring enabled.
#[derive(Debug)]
pub struct MirroredPool {
    /// Pool name (the same on every site).
    pub name: String,
    /// Local pool id.
    pub id: i64,
    /// Image or pool mode.
    pub mode: MirrorMode,
    /// Its peers that this site receives from (rx-only or rx-tx).
    pub receiving_peers: Vec<MirrorPeerSite>,
}

/// What one look at the pools of the local cluster found.
#[derive(Debug, Default)]
pub struct PoolScan {
    /// The pools with mirroring enabled, with their receiving peers.
    pub mirrored: Vec<MirroredPool>,
    /// Pools that exist but could not be opened or read (a transient error, or no access):
    /// whether they are mirrored is not known.
    pub unreadable: Vec<(String, rados_ffi::RadosError)>,
}

/// Every mirrored pool of `local` with the peers it receives from. Pools that are not RBD
/// pools, or whose mirroring is disabled, are left out; a pool removed while it is looked at
/// is left out; a pool that cannot be opened or read is listed as unreadable (the others are
/// still served).
pub async fn mirrored_pools(local: &Rados) -> Result<PoolScan> {
    let mut out = PoolScan::default();
    for name in local.pool_list().await? {
        let io = match local.ioctx(&name, "").await {
            Ok(io) => io,
            Err(e) if e.is_not_found() => continue,
            Err(e) => {
                out.unreadable.push((name, e));
                continue;
            }
        };
        let mode = match io.mirror_mode().await {
            Ok(MirrorMode::Disabled) => continue,
            Ok(mode) => mode,
            Err(e) if e.is_not_found() => continue,
            Err(e) if matches!(e.errno(), Some(libc::EPERM | libc::EACCES)) => {
                // A pool our caps do not cover is not ours to mirror.
                tracing::debug!(pool = %name, error = %e, "not a mirrored pool");
                continue;
            }
            Err(e) => {
                out.unreadable.push((name, e));
                continue;
            }
        };
        let peers = match io.mirror_peer_sites().await {
            Ok(p) => p,
            Err(e) if e.is_not_found() => continue,
            Err(e) => {
                out.unreadable.push((name, e));
                continue;
            }
        };
        let receiving_peers = peers.into_iter().filter(|p| p.direction.receives()).collect();
        out.mirrored.push(MirroredPool { id: io.pool_id(), name, mode, receiving_peers });
    }
    Ok(out)
}

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

/// A pool of both sites, connected: what a pool replayer (or a DR command) works with.
#[derive(Debug)]
pub struct PeerConnection {
    /// The peer cluster.
    pub remote: Rados,
    /// The pool on this site.
    pub local_io: IoCtx,
    /// The pool on the peer.
    pub remote_io: IoCtx,
    /// The local pool's mirror uuid.
    pub local_mirror_uuid: String,
    /// The peer pool's mirror uuid.
    pub remote_mirror_uuid: String,
}

/// Connects to `peer` of pool `pool` (namespace `namespace`) and reads both mirror uuids.
pub async fn connect_peer(
    local: &Rados,
    pool: &str,
    namespace: &str,
    peer: &MirrorPeerSite,
    connect_timeout: Duration,
) -> Result<PeerConnection> {
    let local_io = local.ioctx(pool, namespace).await?;
    let cfg = peer_cluster_config(&local_io, peer, connect_timeout).await?;
    let remote = Rados::connect(&cfg).await?;
    // A peer record of another cluster (a token of the wrong site) reaches a cluster
    // without this pool: say which cluster that was.
    let remote_io = remote.ioctx(pool, namespace).await.map_err(|e| match e {
        RadosError::Call { op, errno: libc::ENOENT, .. } => RadosError::Call {
            op,
            target: format!(
                "pool {pool} at peer {} (fsid {}, mon_host {}), a cluster without this pool \
                 (a peer token of another cluster?)",
                peer.site_name,
                remote.fsid(),
                cfg.mon_host.as_deref().unwrap_or("from its conf")
            ),
            errno: libc::ENOENT,
        },
        e => e,
    })?;
    let local_mirror_uuid = local_io.mirror_uuid().await?;
    let remote_mirror_uuid = remote_io.mirror_uuid().await?;
    Ok(PeerConnection { remote, local_io, remote_io, local_mirror_uuid, remote_mirror_uuid })
}
