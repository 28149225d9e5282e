//! Both sites of a pool, connected as the daemon connects them, and the mirrored images of
//! the pool with their ids and roles on each site.

use std::collections::BTreeMap;
use std::time::Duration;

use peer_manager::discovery::{self, PeerConnection};
use rados_ffi::rbd::Image;
use rados_ffi::{IoCtx, Rados};
use rbd_types::cls_rbd::MirrorImageMode;
use serde::Serialize;

use crate::error::{DrError, Result};

/// The images of one pool a DR command works on, and how: what `failover --planned`,
/// `failback` and `verify` take, and `drill` with more.
#[derive(Debug, Clone)]
pub struct Scope {
    /// The pool.
    pub pool: String,
    /// Image names (empty: every mirrored image of the pool).
    pub images: Vec<String>,
    /// Report what would be done; change and create nothing.
    pub dry_run: bool,
    /// Longest wait for one image: its replay up to the peer's demotion (failover), its
    /// resync and then that replay (failback), the replay of a journal-mode snapshot made
    /// for the command (verify, drill).
    pub sync_timeout: Duration,
    /// Images handled at once.
    pub concurrency: usize,
    /// Time allowed to reach the peer.
    pub connect_timeout: Duration,
}

/// One pool of this site with its (single) receiving peer, connected.
#[derive(Debug)]
pub(crate) struct PoolPair {
    /// Pool name.
    pub pool: String,
    /// The peer's site name.
    pub peer_site: String,
    /// The peer's uuid in this pool's peer list (what this site's mirror snapshots link).
    pub peer_uuid: String,
    /// Both pools and mirror uuids.
    pub conn: PeerConnection,
}

/// The mirrored pools of `local` (all, or those named in `pools`), each connected to the
/// peer it receives from; a pool that cannot be served is returned as an error beside them.
pub(crate) async fn connect_pools(
    local: &Rados,
    pools: &[String],
    connect_timeout: Duration,
) -> Result<(Vec<PoolPair>, Vec<DrError>)> {
    let scan = discovery::mirrored_pools(local).await?;
    let mut errors: Vec<DrError> = scan
        .unreadable
        .into_iter()
        .filter(|(name, _)| pools.is_empty() || pools.contains(name))
        .map(|(_, e)| e.into())
        .collect();
    for p in pools {
        if !scan.mirrored.iter().any(|m| &m.name == p) {
            errors.push(DrError::Pool { pool: p.clone(), reason: "mirroring is not enabled here".into() });
        }
    }
    let mut pairs = Vec::new();
    for pool in scan.mirrored.into_iter().filter(|m| pools.is_empty() || pools.contains(&m.name)) {
        let peer = match pool.receiving_peers.as_slice() {
            [peer] => peer,
            [] => {
                errors.push(DrError::Pool {
                    pool: pool.name,
                    reason: "no peer this site receives from".into(),
                });
                continue;
            }
            _ => {
                errors.push(DrError::Pool {
                    pool: pool.name,
                    reason: "several receiving peers: not supported by the DR commands yet".into(),
                });
                continue;
            }
        };
        match discovery::connect_peer(local, &pool.name, "", peer, connect_timeout).await {
            Ok(conn) => pairs.push(PoolPair {
                pool: pool.name,
                peer_site: peer.site_name.clone(),
                peer_uuid: peer.uuid.clone(),
                conn,
            }),
            Err(e) => errors
                .push(DrError::Pool { pool: pool.name, reason: format!("peer {}: {e}", peer.site_name) }),
        }
    }
    Ok((pairs, errors))
}

/// Pool `pool` of `local` connected to its peer; its error when it cannot be served.
pub(crate) async fn connect_pool(local: &Rados, pool: &str, connect_timeout: Duration) -> Result<PoolPair> {
    let (mut pairs, mut errors) = connect_pools(local, &[pool.to_owned()], connect_timeout).await?;
    if let Some(e) = errors.pop() {
        return Err(e);
    }
    pairs.pop().ok_or_else(|| DrError::Pool { pool: pool.to_owned(), reason: "not mirrored".into() })
}

/// One mirrored image of a pool, by global id, with its ids on both sites.
#[derive(Debug, Clone)]
pub(crate) struct MirroredImage {
    /// Global image id.
    pub global_id: String,
    /// Image name (the peer's when it has one, else ours).
    pub name: String,
    /// Journal or snapshot.
    pub mode: MirrorImageMode,
    /// Image id on this site, `None` before the daemon created it.
    pub local_id: Option<String>,
    /// Image id on the peer, `None` when the peer has none.
    pub remote_id: Option<String>,
}

/// Every image mirrored on either site of `pair` (only those named in `names`, if any).
pub(crate) async fn mirrored_images(pair: &PoolPair, names: &[String]) -> Result<Vec<MirroredImage>> {
    let local = image_records(&pair.conn.local_io).await?;
    let remote = image_records(&pair.conn.remote_io).await?;
    let mut by_global: BTreeMap<String, MirroredImage> = BTreeMap::new();
    for (side_is_local, records) in [(false, remote), (true, local)] {
        for (global_id, (id, name, mode)) in records {
            let e = by_global.entry(global_id.clone()).or_insert_with(|| MirroredImage {
                global_id,
                name,
                mode,
                local_id: None,
                remote_id: None,
            });
            if side_is_local {
                e.local_id = Some(id);
            } else {
                e.remote_id = Some(id);
            }
        }
    }
    let mut images: Vec<MirroredImage> =
        by_global.into_values().filter(|i| names.is_empty() || names.contains(&i.name)).collect();
    images.sort_by(|a, b| a.name.cmp(&b.name));
    for n in names {
        if !images.iter().any(|i| &i.name == n) {
            return Err(DrError::Image {
                image: format!("{}/{n}", pair.pool),
                reason: "not a mirrored image of this pool on either site".into(),
            });
        }
    }
    Ok(images)
}

/// Global id → (image id, name, mode) of the enabled mirrored images of `io`.
pub(crate) async fn image_records(io: &IoCtx) -> Result<BTreeMap<String, (String, String, MirrorImageMode)>> {
    let mut out = BTreeMap::new();
    for (id, global_id) in image_replayer::cls::mirror_image_list(io).await? {
        let Some(record) = image_replayer::cls::mirror_image_get(io, &id).await? else { continue };
        if record.state != rbd_types::cls_rbd::MirrorImageState::Enabled {
            continue;
        }
        let name = match io.image_name(&id).await {
            Ok(n) => n,
            // Removed while listed.
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        out.insert(global_id, (id, name, record.mode));
    }
    Ok(out)
}

/// An image's mirroring role on one site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Writable here.
    Primary,
    /// A copy.
    NonPrimary,
    /// No such image on that site.
    Missing,
}

impl Role {
    /// As `rbd mirror image status` words it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::NonPrimary => "non-primary",
            Role::Missing => "missing",
        }
    }
}

/// The role of image `id` (if any) in `io`.
pub(crate) async fn role(io: &IoCtx, id: Option<&str>) -> Result<Role> {
    let Some(id) = id else { return Ok(Role::Missing) };
    match Image::open_by_id(io, id, None).await {
        Ok(image) => {
            Ok(if image.mirror_image_info().await?.primary { Role::Primary } else { Role::NonPrimary })
        }
        Err(e) if e.is_not_found() => Ok(Role::Missing),
        Err(e) => Err(e.into()),
    }
}

/// The local site's `rbd mirror image status` of image `id` in `io`: (`up+replaying`,
/// description); `None` when no status is recorded.
pub(crate) async fn local_status(io: &IoCtx, id: &str) -> Result<Option<(String, String)>> {
    let image = Image::open_by_id(io, id, None).await?;
    let status = image.mirror_image_global_status().await?;
    Ok(status.local().map(|s| (s.state_string(), s.description.clone())))
}

/// The roles of an image on both sites and its local status (`up+replaying, description`)
/// as they are now, for a report's end; what cannot be read is `Missing` / `None`.
pub(crate) async fn roles_now(
    pair: &PoolPair,
    local_id: Option<&str>,
    remote_id: Option<&str>,
) -> (Role, Role, Option<String>) {
    let local_role = role(&pair.conn.local_io, local_id).await.unwrap_or(Role::Missing);
    let peer_role = role(&pair.conn.remote_io, remote_id).await.unwrap_or(Role::Missing);
    let mut status = None;
    if let Some(id) = local_id {
        status = local_status(&pair.conn.local_io, id).await.ok().flatten().map(|(s, d)| {
            if d.is_empty() {
                s
            } else {
                format!("{s}, {d}")
            }
        });
    }
    (local_role, peer_role, status)
}
