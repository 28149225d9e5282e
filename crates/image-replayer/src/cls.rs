//! The cls `rbd` calls the replayer makes, as async functions over `rados-ffi`: the
//! argument and reply encodings live in [`rbd_types::cls_rbd`], this module only sends them.

use std::collections::BTreeMap;

use bytes::Bytes;
use rados_ffi::IoCtx;
use rbd_types::encoding::DecodeError;
use rbd_types::Decode;
use rbd_types::ProtectionStatus;

use crate::error::{ReplayError, Result};
use rbd_types::cls_rbd::{
    args, header_object_name, object_map_name, MirrorImage, MirrorImageMap, MirrorImageSiteStatus,
    SnapshotInfo, TrashImageSpec, RBD_DIRECTORY, RBD_MIRRORING, RBD_MIRROR_LEADER, RBD_TRASH,
};

/// A cls `rbd` method that returns a map page by page: `(start_after, max_return)` in, at
/// most `max_return` entries after `start_after` out.
struct PagedMethod<V> {
    name: &'static str,
    page: u64,
    input: fn(&str, u64) -> Bytes,
    reply: fn(&Bytes) -> std::result::Result<BTreeMap<String, V>, DecodeError>,
    /// A missing object (`ENOENT`) ends the listing (with what was gathered) instead of
    /// failing it.
    missing_is_end: bool,
}

/// Every entry of a paged listing on `oid`, page after page until a short page; `what` names
/// the listing in decode errors.
async fn exec_paged<V>(
    io: &IoCtx,
    oid: &str,
    method: PagedMethod<V>,
    what: impl Fn() -> String,
) -> Result<BTreeMap<String, V>> {
    let mut all = BTreeMap::new();
    let mut start_after = String::new();
    loop {
        let reply = match io.exec(oid, "rbd", method.name, &(method.input)(&start_after, method.page)).await {
            Ok(r) => r,
            Err(e) if method.missing_is_end && e.is_not_found() => return Ok(all),
            Err(e) => return Err(e.into()),
        };
        let page = (method.reply)(&reply).map_err(|e| ReplayError::decode(what(), e))?;
        let n = page.len() as u64;
        if let Some(last) = page.keys().next_back() {
            start_after = last.clone();
        }
        all.extend(page);
        if n < method.page {
            return Ok(all);
        }
    }
}

/// Every mirrored image of the pool: image id → global image id.
pub async fn mirror_image_list(io: &IoCtx) -> Result<BTreeMap<String, String>> {
    let method = PagedMethod {
        name: "mirror_image_list",
        page: 1024,
        input: args::mirror_image_list,
        reply: args::mirror_image_list_reply,
        missing_is_end: true,
    };
    exec_paged(io, RBD_MIRRORING, method, || format!("mirror_image_list reply of {}", io.pool_name())).await
}

/// Every mirrored image's record (image id → record), a page of 1,024 per call
/// (`mirror_image_status_list`), instead of one `mirror_image_get` per image.
pub async fn mirror_images(io: &IoCtx) -> Result<BTreeMap<String, MirrorImage>> {
    let method = PagedMethod {
        name: "mirror_image_status_list",
        page: 1024,
        input: args::mirror_image_status_list,
        reply: args::mirror_image_status_list_images,
        missing_is_end: true,
    };
    exec_paged(io, RBD_MIRRORING, method, || format!("mirror images of {}", io.pool_name())).await
}

/// The mirroring record of one image, `None` when the image is not mirrored.
pub async fn mirror_image_get(io: &IoCtx, image_id: &str) -> Result<Option<MirrorImage>> {
    match io.exec(RBD_MIRRORING, "rbd", "mirror_image_get", &args::mirror_image_get(image_id)).await {
        Ok(reply) => args::mirror_image_get_reply(&reply)
            .map(Some)
            .map_err(|e| ReplayError::decode(format!("mirror image record of {image_id}"), e)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The local image id of a global image id, `None` when this pool has no such image.
pub async fn mirror_image_get_image_id(io: &IoCtx, global_id: &str) -> Result<Option<String>> {
    match io
        .exec(RBD_MIRRORING, "rbd", "mirror_image_get_image_id", &args::mirror_image_get_image_id(global_id))
        .await
    {
        Ok(reply) => args::mirror_image_get_image_id_reply(&reply)
            .map(Some)
            .map_err(|e| ReplayError::decode(format!("image id of global id {global_id}"), e)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Writes an image's mirroring record.
pub async fn mirror_image_set(io: &IoCtx, image_id: &str, image: &MirrorImage) -> Result<()> {
    io.exec_write(RBD_MIRRORING, "rbd", "mirror_image_set", &args::mirror_image_set(image_id, image)).await?;
    Ok(())
}

/// Removes an image's mirroring record (`ENOENT`: there was none).
pub async fn mirror_image_remove(io: &IoCtx, image_id: &str) -> Result<()> {
    match io
        .exec_write(RBD_MIRRORING, "rbd", "mirror_image_remove", &args::mirror_image_remove(image_id))
        .await
    {
        Err(e) if !e.is_not_found() => Err(e.into()),
        _ => Ok(()),
    }
}

/// Adds image `image_id` to the trash (`rbd_trash`, created if missing); `Ok(false)` when it
/// is there already (`EEXIST`: an earlier, interrupted move).
pub async fn trash_add(io: &IoCtx, image_id: &str, spec: &TrashImageSpec) -> Result<bool> {
    match io.exec_write(RBD_TRASH, "rbd", "trash_add", &args::trash_add(image_id, spec)).await {
        Ok(_) => Ok(true),
        Err(e) if e.errno() == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Every entry of the trash: image id → its spec (none when `rbd_trash` does not exist).
pub async fn trash_list(io: &IoCtx) -> Result<BTreeMap<String, TrashImageSpec>> {
    let method = PagedMethod {
        name: "trash_list",
        page: 1024,
        input: args::trash_list,
        reply: args::trash_list_reply,
        missing_is_end: true,
    };
    exec_paged(io, RBD_TRASH, method, || format!("trash of {}", io.pool_name())).await
}

/// Removes image `name` (id `image_id`) from the image directory (`ENOENT`: not there).
pub async fn dir_remove_image(io: &IoCtx, name: &str, image_id: &str) -> Result<()> {
    match io
        .exec_write(RBD_DIRECTORY, "rbd", "dir_remove_image", &args::dir_remove_image(name, image_id))
        .await
    {
        Err(e) if !e.is_not_found() => Err(e.into()),
        _ => Ok(()),
    }
}

/// Publishes one site status of an image (`mirror_uuid` empty: the pool's own site).
pub async fn mirror_image_status_set(
    io: &IoCtx,
    global_id: &str,
    status: &MirrorImageSiteStatus,
) -> Result<()> {
    let arg = args::mirror_image_status_set(global_id, status);
    io.exec_write(RBD_MIRRORING, "rbd", "mirror_image_status_set", &arg).await?;
    Ok(())
}

/// Drops the statuses whose writers no longer watch `rbd_mirroring`.
pub async fn mirror_image_status_remove_down(io: &IoCtx) -> Result<()> {
    io.exec_write(
        RBD_MIRRORING,
        "rbd",
        "mirror_image_status_remove_down",
        &args::mirror_image_status_remove_down(),
    )
    .await?;
    Ok(())
}

/// The daemon instances registered in `io`'s `rbd_mirror_leader` (§5.5); none when it does
/// not exist yet. A record whose id is not UTF-8 (no instance wrote it: ids are the
/// decimal RADOS instance ids) is logged and removed; the others are listed.
pub async fn mirror_instances_list(io: &IoCtx) -> Result<Vec<String>> {
    let raw = match io.exec(RBD_MIRROR_LEADER, "rbd", "mirror_instances_list", &[]).await {
        Ok(reply) => args::mirror_instances_list_reply(&reply)
            .map_err(|e| ReplayError::decode(format!("instance list of {}", io.pool_name()), e))?,
        Err(e) if e.is_not_found() => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut ids = Vec::with_capacity(raw.len());
    for id in raw {
        match std::str::from_utf8(&id) {
            Ok(id) => ids.push(id.to_owned()),
            Err(_) => {
                let key = format!("instance_{}", id.escape_ascii());
                tracing::error!(
                    pool = io.pool_name(),
                    key,
                    "instance record {key} of {RBD_MIRROR_LEADER} does not decode (its id is not UTF-8): removing it"
                );
                if let Err(e) = instances_remove(io, &id).await {
                    tracing::error!(key, error = %e, "cannot remove the instance record");
                }
            }
        }
    }
    Ok(ids)
}

/// Registers daemon instance `instance_id` in `rbd_mirror_leader`.
pub async fn mirror_instances_add(io: &IoCtx, instance_id: &str) -> Result<()> {
    io.exec_write(
        RBD_MIRROR_LEADER,
        "rbd",
        "mirror_instances_add",
        &args::mirror_instance_id(instance_id.as_bytes()),
    )
    .await?;
    Ok(())
}

/// Unregisters daemon instance `instance_id` from `rbd_mirror_leader`.
pub async fn mirror_instances_remove(io: &IoCtx, instance_id: &str) -> Result<()> {
    instances_remove(io, instance_id.as_bytes()).await
}

/// Removes the instance record of id `instance_id` (its bytes) from `rbd_mirror_leader`.
async fn instances_remove(io: &IoCtx, instance_id: &[u8]) -> Result<()> {
    io.exec_write(
        RBD_MIRROR_LEADER,
        "rbd",
        "mirror_instances_remove",
        &args::mirror_instance_id(instance_id),
    )
    .await?;
    Ok(())
}

/// The image map in `rbd_mirror_leader`: global image id → the instance that replays it.
pub async fn mirror_image_map_list(io: &IoCtx) -> Result<BTreeMap<String, MirrorImageMap>> {
    let method = PagedMethod {
        name: "mirror_image_map_list",
        page: 1024,
        input: args::mirror_image_map_list,
        reply: args::mirror_image_map_list_reply,
        missing_is_end: true,
    };
    exec_paged(io, RBD_MIRROR_LEADER, method, || format!("image map of {}", io.pool_name())).await
}

/// Key prefix of the image map's records in `rbd_mirror_leader`'s omap.
const IMAGE_MAP_KEY_PREFIX: &str = "image_map_";

/// The image map read record by record from `rbd_mirror_leader`'s omap, for when
/// [`mirror_image_map_list`] fails: the cls method fails as a whole (`EINVAL`) when one record
/// does not decode, for stock as for us. Returns the records that decode, and the keys of
/// those that do not, with why.
pub async fn mirror_image_map_records(
    io: &IoCtx,
) -> Result<(BTreeMap<String, MirrorImageMap>, Vec<(String, DecodeError)>)> {
    let omap = match io.omap_get_all(RBD_MIRROR_LEADER, IMAGE_MAP_KEY_PREFIX).await {
        Ok(omap) => omap,
        Err(e) if e.is_not_found() => return Ok((BTreeMap::new(), Vec::new())),
        Err(e) => return Err(e.into()),
    };
    let mut good = BTreeMap::new();
    let mut bad = Vec::new();
    for (key, value) in omap {
        let Some(global_id) = key.strip_prefix(IMAGE_MAP_KEY_PREFIX) else { continue };
        match MirrorImageMap::decode_all(&value) {
            Ok(map) => {
                good.insert(global_id.to_owned(), map);
            }
            Err(e) => bad.push((key.clone(), e)),
        }
    }
    Ok((good, bad))
}

/// Removes image-map records by omap key (those [`mirror_image_map_records`] could not
/// decode).
pub async fn mirror_image_map_remove_keys(io: &IoCtx, keys: &[&str]) -> Result<()> {
    io.omap_remove(RBD_MIRROR_LEADER, keys).await?;
    Ok(())
}

/// Records that `map.instance_id` replays image `global_image_id`.
pub async fn mirror_image_map_update(io: &IoCtx, global_image_id: &str, map: &MirrorImageMap) -> Result<()> {
    let arg = args::mirror_image_map_update(global_image_id, map);
    io.exec_write(RBD_MIRROR_LEADER, "rbd", "mirror_image_map_update", &arg).await?;
    Ok(())
}

/// Removes image `global_image_id` from the image map.
pub async fn mirror_image_map_remove(io: &IoCtx, global_image_id: &str) -> Result<()> {
    let arg = args::mirror_image_map_remove(global_image_id);
    io.exec_write(RBD_MIRROR_LEADER, "rbd", "mirror_image_map_remove", &arg).await?;
    Ok(())
}

/// Tells a primary pool that this site (its mirror uuid) pulls from it.
pub async fn mirror_peer_ping(io: &IoCtx, site_name: &str, mirror_uuid: &str) -> Result<()> {
    let arg = args::mirror_peer_ping(site_name, mirror_uuid, rbd_types::cls_rbd::MirrorPeerDirection::Tx);
    io.exec_write(RBD_MIRRORING, "rbd", "mirror_peer_ping", &arg).await?;
    Ok(())
}

/// The image's snapshot context: `(seq, snap ids newest first)`.
pub async fn get_snapcontext(io: &IoCtx, image_id: &str) -> Result<(u64, Vec<u64>)> {
    let header = header_object_name(image_id);
    let reply = io.exec(&header, "rbd", "get_snapcontext", &args::get_snapcontext()).await?;
    let snapc = args::get_snapcontext_reply(&reply)
        .map_err(|e| ReplayError::decode(format!("snap context of {header}"), e))?;
    Ok((snapc.seq, snapc.snaps))
}

/// Sets the HEAD state of objects `[start, end)` in the image's object map.
pub async fn object_map_update(io: &IoCtx, image_id: &str, start: u64, end: u64, state: u8) -> Result<()> {
    let arg = args::object_map_update(start, end, state, None);
    io.exec_write(&object_map_name(image_id, None), "rbd", "object_map_update", &arg).await?;
    Ok(())
}

/// Resizes the HEAD object map to `objects` entries, new ones in `default_state`.
pub async fn object_map_resize(io: &IoCtx, image_id: &str, objects: u64, default_state: u8) -> Result<()> {
    let arg = args::object_map_resize(objects, default_state);
    io.exec_write(&object_map_name(image_id, None), "rbd", "object_map_resize", &arg).await?;
    Ok(())
}

/// Sets the image's size in its header.
pub async fn set_size(io: &IoCtx, image_id: &str, size: u64) -> Result<()> {
    io.exec_write(&header_object_name(image_id), "rbd", "set_size", &args::set_size(size)).await?;
    Ok(())
}

/// Sets one image-meta key.
pub async fn metadata_set(io: &IoCtx, image_id: &str, key: &str, value: &str) -> Result<()> {
    let mut map = BTreeMap::new();
    map.insert(key.to_owned(), Bytes::copy_from_slice(value.as_bytes()));
    io.exec_write(&header_object_name(image_id), "rbd", "metadata_set", &args::metadata_set(&map)).await?;
    Ok(())
}

/// Removes one image-meta key (absent is fine).
pub async fn metadata_remove(io: &IoCtx, image_id: &str, key: &str) -> Result<()> {
    match io
        .exec_write(&header_object_name(image_id), "rbd", "metadata_remove", &args::metadata_remove(key))
        .await
    {
        Err(e) if e.is_not_found() => Ok(()),
        other => Ok(other?),
    }
}

/// The image's size at snapshot `snap_id` ([`rbd_types::cls_rbd::CEPH_NOSNAP`] for HEAD).
pub async fn get_size(io: &IoCtx, image_id: &str, snap_id: u64) -> Result<u64> {
    let header = header_object_name(image_id);
    let reply = io.exec(&header, "rbd", "get_size", &args::get_size(snap_id)).await?;
    let (_, size) = args::get_size_reply(&reply)
        .map_err(|e| ReplayError::decode(format!("size of snapshot {snap_id} in {header}"), e))?;
    Ok(size)
}

/// The image's feature bits (cls `get_features`, as a read-only client asks).
pub async fn get_features(io: &IoCtx, image_id: &str) -> Result<u64> {
    let header = header_object_name(image_id);
    let reply = io
        .exec(&header, "rbd", "get_features", &args::get_features(rbd_types::cls_rbd::CEPH_NOSNAP, true))
        .await?;
    let (features, _) = args::get_features_reply(&reply)
        .map_err(|e| ReplayError::decode(format!("features in {header}"), e))?;
    Ok(features)
}

/// The image's flags (`RBD_FLAG_*`) at snapshot `snap_id` ([`rbd_types::cls_rbd::CEPH_NOSNAP`]
/// for HEAD).
pub async fn get_flags(io: &IoCtx, image_id: &str, snap_id: u64) -> Result<u64> {
    let header = header_object_name(image_id);
    let reply = io.exec(&header, "rbd", "get_flags", &args::get_flags(snap_id)).await?;
    args::get_flags_reply(&reply)
        .map_err(|e| ReplayError::decode(format!("flags of snapshot {snap_id} in {header}"), e))
}

/// The image's snapshots (every namespace), oldest first.
pub async fn snapshots(io: &IoCtx, image_id: &str) -> Result<Vec<SnapshotInfo>> {
    let (_, mut ids) = get_snapcontext(io, image_id).await?;
    ids.sort_unstable();
    let header = header_object_name(image_id);
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let reply = match io.exec(&header, "rbd", "snapshot_get", &args::snapshot_get(id)).await {
            Ok(r) => r,
            Err(e) if e.is_not_found() => continue,
            // cls `rbd` answers EIO for a record it cannot decode.
            Err(e) if e.errno() == Some(libc::EIO) => {
                return Err(ReplayError::Invalid(format!(
                    "snapshot {id} of {header}: its record (omap key snapshot_{id:016x}) does not \
                     decode ({e})"
                )))
            }
            Err(e) => return Err(e.into()),
        };
        let info = args::snapshot_get_reply(&reply)
            .map_err(|e| ReplayError::decode(format!("snapshot {id} of {header}"), e))?;
        out.push(info);
    }
    Ok(out)
}

/// Every image-meta key of an image.
pub async fn metadata_list(io: &IoCtx, image_id: &str) -> Result<BTreeMap<String, Bytes>> {
    let header = header_object_name(image_id);
    let method = PagedMethod {
        name: "metadata_list",
        page: 256,
        input: args::metadata_list,
        reply: args::metadata_list_reply,
        missing_is_end: false,
    };
    exec_paged(io, &header, method, || format!("image-meta of {header}")).await
}

/// Sets a non-primary mirror snapshot's copy progress (and completes it).
pub async fn mirror_image_snapshot_set_copy_progress(
    io: &IoCtx,
    image_id: &str,
    snap_id: u64,
    complete: bool,
    last_copied_object_number: u64,
) -> Result<()> {
    let arg = args::mirror_image_snapshot_set_copy_progress(snap_id, complete, last_copied_object_number);
    io.exec_write(&header_object_name(image_id), "rbd", "mirror_image_snapshot_set_copy_progress", &arg)
        .await?;
    Ok(())
}

/// Unlinks a peer from a primary mirror snapshot; not linked (`ENOENT`) is success.
pub async fn mirror_image_snapshot_unlink_peer(
    io: &IoCtx,
    image_id: &str,
    snap_id: u64,
    mirror_peer_uuid: &str,
) -> Result<()> {
    let arg = args::mirror_image_snapshot_unlink_peer(snap_id, mirror_peer_uuid);
    match io.exec_write(&header_object_name(image_id), "rbd", "mirror_image_snapshot_unlink_peer", &arg).await
    {
        Err(e) if e.is_not_found() => Ok(()),
        other => Ok(other?),
    }
}

/// A snapshot's protection status.
pub async fn get_protection_status(io: &IoCtx, image_id: &str, snap_id: u64) -> Result<ProtectionStatus> {
    let header = header_object_name(image_id);
    let reply =
        io.exec(&header, "rbd", "get_protection_status", &args::get_protection_status(snap_id)).await?;
    args::get_protection_status_reply(&reply)
        .map_err(|e| ReplayError::decode(format!("protection status of snapshot {snap_id} in {header}"), e))
}
