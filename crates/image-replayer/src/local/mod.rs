//! The secondary (local) image: its identity in the local pool's mirroring directory, its
//! creation for either mirroring mode, the resync flag an operator sets on it, and the
//! modules that write ([`image`]) and delete ([`deleter`]) it.

pub(crate) mod deleter;
pub(crate) mod image;
pub(crate) mod write_batch;

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use journal_reader::event::ClientMeta;
use journal_reader::tail::read_header;
use journal_reader::{ClientData, TagData};
use rados_ffi::rbd::{Image, ImageCreateOptions, ParentSpec};
use rados_ffi::{IoCtx, Rados};
use rbd_types::cls_journal::{header_object_name as journal_header, JournalHeader, Tag};
use rbd_types::cls_rbd::{MirrorImage, MirrorImageMode, MirrorImageState, MirrorImageStatusState as State};
use rbd_types::{features, Decode};

use crate::cls;
use crate::error::{ReplayError, Result};
use crate::status::{publish, StatusPublisher};
use crate::{Attempt, PeerContext};
use image::ImageGeometry;

/// The configuration of the local image `image_id`: the daemon's, with the overrides of its
/// `rbd_mirroring_*` options set on the local pool (`rbd config pool set`) and on the image
/// (`rbd config image set`), as librbd applies them to the image. A bad override is logged
/// and left out.
pub(crate) async fn image_config(ctx: &PeerContext, image_id: &str) -> Result<crate::MirrorConfig> {
    use rbd_types::cls_rbd::{header_object_name, CONFIG_METADATA_PREFIX, METADATA_KEY_PREFIX, RBD_INFO};
    let prefix = format!("{METADATA_KEY_PREFIX}{CONFIG_METADATA_PREFIX}");
    let read = |oid: String| {
        let (io, prefix) = (&ctx.local_io, prefix.as_str());
        async move {
            match io.omap_get_all(&oid, prefix).await {
                Ok(map) => Ok(map),
                Err(e) if e.is_not_found() => Ok(Default::default()),
                Err(e) => Err(e),
            }
        }
    };
    let pool = read(RBD_INFO.to_owned()).await?;
    let image = read(header_object_name(image_id)).await?;
    let (config, errors) =
        ctx.config().with_image_overrides(metadata_entries(&pool), metadata_entries(&image));
    for (source, e) in errors {
        tracing::warn!(?source, error = %e, "configuration override of the image ignored");
    }
    Ok(config)
}

/// Metadata omap entries (`metadata_<key>` → value) as `<key>` → value.
fn metadata_entries(map: &std::collections::BTreeMap<String, bytes::Bytes>) -> Vec<(&str, &[u8])> {
    let prefix = rbd_types::cls_rbd::METADATA_KEY_PREFIX;
    map.iter().filter_map(|(k, v)| Some((k.strip_prefix(prefix)?, v.as_ref()))).collect()
}

/// The primary image as found on the remote site.
#[derive(Debug, Clone)]
pub struct RemoteImage {
    /// Its image id in the remote pool.
    pub image_id: String,
    /// Its name (the local image gets the same).
    pub name: String,
    /// The global image id shared by both sites.
    pub global_id: String,
    /// Size, order, striping, features.
    pub geometry: ImageGeometry,
    /// The name of the pool its data objects live in, when that is not the image's pool
    /// (`rbd create --data-pool`).
    pub data_pool: Option<String>,
    /// Its parent, when it is a clone (not flattened).
    pub parent: Option<ParentSpec>,
    /// Its clone format (2 when it has the clone-child operation feature, else 1).
    pub clone_format: u8,
}

impl RemoteImage {
    /// Reads what bootstrap needs of the remote image, through one open of it; also says
    /// whether it is currently primary (its newest journal tag is local).
    pub async fn read(io: &IoCtx, image_id: &str, global_id: &str) -> Result<(RemoteImage, bool)> {
        let image = match Image::open_by_id(io, image_id, None).await {
            Ok(image) => image,
            // librbd says only EIO when a record of the image header does not decode (cls
            // `rbd` cannot decode it either): name the snapshot record, if it is one.
            Err(e) if e.errno() == Some(libc::EIO) => {
                crate::cls::snapshots(io, image_id).await?;
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        let name = image.name().await?;
        let geometry = ImageGeometry::of(&image).await?;
        let primary = image.mirror_image_info().await?.primary;
        let data_pool = match geometry.data_pool_id {
            id if id == io.pool_id() => None,
            id => Some(io.in_pool(id).await?.pool_name().to_owned()),
        };
        let parent = image.parent().await?;
        let clone_format =
            if image.op_features().await? & features::OPERATION_CLONE_CHILD != 0 { 2 } else { 1 };
        let remote = RemoteImage {
            image_id: image_id.to_owned(),
            name,
            global_id: global_id.to_owned(),
            geometry,
            data_pool,
            parent,
            clone_format,
        };
        Ok((remote, primary))
    }
}

/// What the replayer's mode dispatch found before handing the attempt to the image's mode.
#[derive(Debug)]
pub(crate) struct Found {
    /// The primary image.
    pub(crate) remote: RemoteImage,
    /// Whether it is primary now.
    pub(crate) remote_primary: bool,
    /// The local image's id, when the local pool's mirroring directory has one (not primary).
    pub(crate) local_id: Option<String>,
    /// What the local copy of a clone is cloned from, when it is to be created.
    pub(crate) clone: Option<CloneSource>,
}

/// The local, mirrored copy of a clone's parent snapshot, to clone the local image from.
#[derive(Debug)]
pub(crate) struct CloneSource {
    /// The local parent's pool (and namespace).
    parent_io: IoCtx,
    /// The local parent's name.
    parent_name: String,
    /// The parent snapshot's name (the same on both sites).
    snap_name: String,
}

/// Where the local copy of clone `remote` is cloned from, as the stock daemon's
/// `CreateImageRequest` decides: the parent must be mirrored, registered in the local pool of
/// the same name, not in an initial sync (no `.rbd-mirror.<local uuid>.` sync point on the
/// primary's parent), with the snapshot of the same name here and, in snapshot mode, a complete
/// non-primary mirror snapshot at or after it. `Ok(Err(why))` while it must wait.
pub(crate) async fn clone_source(
    ctx: &PeerContext,
    remote: &RemoteImage,
    parent: &ParentSpec,
    mode: MirrorImageMode,
) -> Result<std::result::Result<CloneSource, String>> {
    let what = format!("parent image {}/{}@{}", parent.pool_name, parent.image_name, parent.snap_name);
    let remote_parent_io = ctx.remote.ioctx(&parent.pool_name, &parent.pool_namespace).await?;
    let Some(record) = cls::mirror_image_get(&remote_parent_io, &parent.image_id).await? else {
        return Ok(Err(format!("waiting for the {what} to be mirrored (it is not)")));
    };
    let parent_io = match ctx.local.ioctx(&parent.pool_name, &parent.pool_namespace).await {
        Ok(io) => io,
        Err(e) if e.is_not_found() => return Ok(Err(format!("waiting for pool {} here", parent.pool_name))),
        Err(e) => return Err(e.into()),
    };
    let Some(local_parent_id) = cls::mirror_image_get_image_id(&parent_io, &record.global_image_id).await?
    else {
        return Ok(Err(format!("waiting for the {what} to be mirrored here")));
    };
    let sync_prefix = format!(".rbd-mirror.{}.", ctx.local_mirror_uuid);
    let remote_snaps = cls::snapshots(&remote_parent_io, &parent.image_id).await?;
    if remote_snaps.iter().any(|s| s.name.starts_with(&sync_prefix)) {
        return Ok(Err(format!("waiting for the initial sync of the {what}")));
    }
    let local_snaps = cls::snapshots(&parent_io, &local_parent_id).await?;
    let Some(snap) = local_snaps.iter().find(|s| s.name == parent.snap_name) else {
        return Ok(Err(format!("waiting for the {what}: no snapshot {} here yet", parent.snap_name)));
    };
    if mode == MirrorImageMode::Snapshot {
        let synced = local_snaps.iter().any(|s| {
            s.id >= snap.id
                && matches!(&s.snapshot_namespace, rbd_types::SnapshotNamespace::Mirror(m)
                    if m.complete && m.state == rbd_types::MirrorSnapshotState::NonPrimary)
        });
        if !synced {
            return Ok(Err(format!("waiting for the {what} to be synced here")));
        }
    }
    let parent_name = parent_io.image_name(&local_parent_id).await?;
    tracing::debug!(image = %remote.name, parent = %parent_name, snap = %parent.snap_name, "the local parent is ready");
    Ok(Ok(CloneSource { parent_io, parent_name, snap_name: parent.snap_name.clone() }))
}

/// Whether image `image_id` of the pool `io` is primary (its newest journal tag is local).
pub async fn is_primary(io: &IoCtx, image_id: &str) -> Result<bool> {
    Ok(Image::open_by_id(io, image_id, None).await?.mirror_image_info().await?.primary)
}

/// The local image of `remote`, mirrored in `mode`: found through the local pool's mirroring
/// directory, or created with the primary's geometry (`options` adds what the mode needs),
/// made ready by `prepare` (given its id), then recorded in the mirroring directory, which
/// makes it found from then on. Returns its id and whether it was created now.
pub(crate) async fn ensure_local_image<F, Fut>(
    ctx: &PeerContext,
    remote: &RemoteImage,
    mode: MirrorImageMode,
    options: ImageCreateOptions,
    clone: Option<&CloneSource>,
    prepare: F,
) -> Result<(String, bool)>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let io = &ctx.local_io;
    if let Some(id) = find_local_image(io, remote, mode).await? {
        return Ok((id, false));
    }
    let g = &remote.geometry;
    let data_pool = local_data_pool(&ctx.local, remote).await?;
    let options = ImageCreateOptions {
        data_pool: data_pool.clone(),
        order: Some(g.order),
        features: Some(g.features & !features::NON_PRIMARY),
        stripe_unit: Some(g.stripe_unit),
        stripe_count: Some(g.stripe_count),
        ..options
    };
    match clone {
        Some(c) => {
            let options = ImageCreateOptions { clone_format: Some(remote.clone_format), ..options };
            io.clone_image(&c.parent_io, &c.parent_name, &c.snap_name, &remote.name, &options).await?;
            tracing::info!(image = %remote.name, parent = %c.parent_name, snap = %c.snap_name, "cloned the local image from the local parent");
        }
        None => io.create_image(&remote.name, g.size, &options).await?,
    }
    let id = io.image_id(&remote.name).await?;
    prepare(id.clone()).await?;
    let record =
        MirrorImage { global_image_id: remote.global_id.clone(), state: MirrorImageState::Enabled, mode };
    cls::mirror_image_set(io, &id, &record).await?;
    tracing::info!(image = %remote.name, local_image_id = %id, mode = mode.as_str(), ?data_pool, "created the local non-primary image");
    Ok((id, true))
}

/// The data pool of the local copy of `remote`, as the stock daemon chooses it: the local
/// site's `rbd_default_data_pool` when set; else the primary's separate data pool when a pool
/// of that name exists here; else none (the data objects stay in the image's pool).
async fn local_data_pool(local: &Rados, remote: &RemoteImage) -> Result<Option<String>> {
    let default = local.conf_get("rbd_default_data_pool").unwrap_or_default();
    Ok(match (default.is_empty(), &remote.data_pool) {
        (false, _) => Some(default),
        (true, Some(pool)) => match local.pool_lookup(pool).await {
            Ok(_) => Some(pool.clone()),
            Err(e) if e.is_not_found() => {
                tracing::info!(data_pool = %pool, "the primary's data pool does not exist here: data stays in the image's pool");
                None
            }
            Err(e) => return Err(e.into()),
        },
        (true, None) => None,
    })
}

/// The local image of `remote` through the local pool's mirroring directory, checked to be
/// mirrored in `mode`; `None` when there is none yet and its name is free.
pub(crate) async fn find_local_image(
    io: &IoCtx,
    remote: &RemoteImage,
    mode: MirrorImageMode,
) -> Result<Option<String>> {
    if let Some(id) = cls::mirror_image_get_image_id(io, &remote.global_id).await? {
        if let Some(record) = cls::mirror_image_get(io, &id).await? {
            if record.mode != mode {
                return Err(ReplayError::Conflict(format!(
                    "local image {id} is mirrored in {} mode, the primary in {} mode",
                    record.mode.as_str(),
                    mode.as_str()
                )));
            }
        }
        return Ok(Some(id));
    }
    if io.image_id(&remote.name).await.is_ok() {
        return Err(ReplayError::Conflict(format!(
            "a local image named {} exists but is not mirrored with global id {}",
            remote.name, remote.global_id
        )));
    }
    Ok(None)
}

/// The tag class of the image journal client (`""`) of `header` (journal header object
/// `object`, for errors) and the newest tag of that class: its epoch and owner.
pub(crate) fn newest_image_tag<'h>(
    header: &'h JournalHeader,
    object: &str,
) -> Result<(u64, Option<&'h Tag>)> {
    let client = header
        .clients
        .get("")
        .ok_or_else(|| ReplayError::Invalid(format!("{object}: no image journal client")))?;
    let meta = ClientData::decode_all(&client.data)
        .map_err(|e| ReplayError::decode(format!("image client data in {object}"), e))?;
    let ClientMeta::Image(meta) = meta.client_meta else {
        return Err(ReplayError::Invalid(format!("{object}: the image client is not an image client")));
    };
    Ok((meta.tag_class, header.tags.values().rfind(|t| t.tag_class == meta.tag_class)))
}

/// The owner (`TagData::mirror_uuid`) of the newest epoch of the local image's journal:
/// `""` when the image is primary here, the remote pool's mirror uuid while it follows that
/// peer, `"<orphan>"` after a demotion; `None` when the journal has no tag yet.
pub(crate) async fn local_tag_owner(io: &IoCtx, image_id: &str) -> Result<Option<String>> {
    let object = journal_header(image_id);
    newest_tag_owner(&read_header(io, image_id).await?, &object)
}

/// The owner of the newest image tag of a journal header `object`, when it has one.
fn newest_tag_owner(header: &JournalHeader, object: &str) -> Result<Option<String>> {
    let (_, newest) = newest_image_tag(header, object)?;
    newest
        .map(|t| {
            TagData::decode_all(&t.data)
                .map(|d| d.mirror_uuid)
                .map_err(|e| ReplayError::decode(format!("tag {} in {object}", t.tid), e))
        })
        .transpose()
}

/// Image-meta key prefix of the per-peer mirror image-meta (`.rbd_mirror.<uuid>`).
pub(crate) const IMAGE_META_PREFIX: &str = ".rbd_mirror.";

/// The local journal as replay watches it, from one read of its header: whether `rbd
/// mirror image resync` was requested (the image client's flag), and the owner of its newest
/// epoch (`Some("")` once the image is promoted here).
pub(crate) async fn local_journal_state(io: &IoCtx, local_image_id: &str) -> Result<(bool, Option<String>)> {
    let object = journal_header(local_image_id);
    let header = read_header(io, local_image_id).await?;
    let Some(client) = header.clients.get("") else {
        return Ok((false, None));
    };
    let data = ClientData::decode_all(&client.data)
        .map_err(|e| ReplayError::decode(format!("image client of {object}"), e))?;
    let resync = matches!(data.client_meta, ClientMeta::Image(ref m) if m.resync_requested);
    Ok((resync, newest_tag_owner(&header, &object)?))
}

/// Whether `rbd mirror image resync` flagged the local image (ceph-formats.md §6.4). Journal
/// mode: the image journal client's `resync_requested`; snapshot mode: the image-meta
/// `.rbd_mirror.<uuid>` = `{"resync_requested": true}`.
pub(crate) async fn resync_requested(
    io: &IoCtx,
    local_image_id: &str,
    mode: MirrorImageMode,
) -> Result<bool> {
    match mode {
        MirrorImageMode::Journal => Ok(local_journal_state(io, local_image_id).await?.0),
        MirrorImageMode::Snapshot => {
            let meta = cls::metadata_list(io, local_image_id).await?;
            Ok(meta.iter().filter(|(k, _)| k.starts_with(IMAGE_META_PREFIX)).any(|(_, v)| {
                serde_json::from_slice::<serde_json::Value>(v)
                    .ok()
                    .and_then(|j| j.get("resync_requested").and_then(serde_json::Value::as_bool))
                    .unwrap_or(false)
            }))
        }
    }
}

/// Resync, as stock: the local image goes to the RBD trash (kept there
/// `rbd_mirroring_delete_delay`, then removed by the image deleter of the namespace's
/// leader); the next attempt, a second later, creates it afresh and syncs it fully.
pub(crate) async fn resync(
    ctx: &PeerContext,
    local_id: &str,
    status: &mut StatusPublisher,
) -> Result<Attempt> {
    publish(ctx, status, State::Stopped, "resync requested").await;
    deleter::trash_move(ctx, local_id, "resync requested").await?;
    Ok(Attempt::RetryAfter(Duration::from_secs(1)))
}

/// The name librbd gives a non-primary mirror snapshot of image `global_id`.
pub fn non_primary_snapshot_name(global_id: &str) -> String {
    format!(".mirror.non_primary.{global_id}.{}", random_uuid())
}

/// A random (version 4 format) uuid, as librbd puts in the names of the snapshots it makes
/// (`.mirror.non_primary.<global id>.<uuid>`); randomness from std's per-process keyed hasher.
pub(crate) fn random_uuid() -> String {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let word = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(now);
        h.write_u64(salt);
        h.finish()
    };
    let (hi, lo) = (word(1), word(2));
    let hi = (hi & !0xf000) | 0x4000; // version 4
    let lo = (lo & !(0xc << 60)) | (0x8 << 60); // RFC 4122 variant
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_uuids_look_like_uuids() {
        let (a, b) = (random_uuid(), random_uuid());
        assert_ne!(a, b);
        let groups: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{a}");
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()), "{a}");
        assert_eq!(a.as_bytes()[14], b'4', "{a}");
    }
}
