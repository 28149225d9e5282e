//! librbd's C enum values mapped onto the workspace's one type per concept (`rbd-types`).
//! librbd's `rbd_mirror_*_t` values are cls `rbd`'s wire values (the tests below check every
//! one against the checked-in header); a value this build does not know is a malformed reply
//! naming the call, never a panic.

use rbd_types::{
    MirrorImageMode, MirrorImageState, MirrorImageStatusState, MirrorMode, MirrorPeerDirection,
    MirrorSnapshotState,
};

use crate::error::{RadosError, Result};

/// `v` decoded by `decode`, or a `BadReply` for call `op` on `target`.
fn known<T>(
    v: u32,
    what: &str,
    decode: impl FnOnce(u8) -> Option<T>,
    op: &'static str,
    target: &str,
) -> Result<T> {
    u8::try_from(v).ok().and_then(decode).ok_or_else(|| RadosError::BadReply {
        op,
        target: target.to_owned(),
        detail: format!("unknown {what} {v}"),
    })
}

/// `rbd_mirror_mode_t`.
pub(crate) fn mirror_mode(v: u32, op: &'static str, target: &str) -> Result<MirrorMode> {
    known(v, "mirror mode", |b| MirrorMode::from_u32(u32::from(b)), op, target)
}

/// `rbd_mirror_peer_direction_t`.
pub(crate) fn peer_direction(v: u32, op: &'static str, target: &str) -> Result<MirrorPeerDirection> {
    known(v, "peer direction", MirrorPeerDirection::from_u8, op, target)
}

/// `rbd_mirror_image_mode_t`.
pub(crate) fn mirror_image_mode(v: u32, op: &'static str, target: &str) -> Result<MirrorImageMode> {
    known(v, "mirror image mode", MirrorImageMode::from_u8, op, target)
}

/// `rbd_mirror_image_state_t`.
pub(crate) fn mirror_image_state(v: u32, op: &'static str, target: &str) -> Result<MirrorImageState> {
    known(v, "mirror image state", MirrorImageState::from_u8, op, target)
}

/// `rbd_mirror_image_status_state_t`.
pub(crate) fn mirror_image_status_state(
    v: u32,
    op: &'static str,
    target: &str,
) -> Result<MirrorImageStatusState> {
    known(v, "mirror image status state", MirrorImageStatusState::from_u8, op, target)
}

/// `rbd_snap_mirror_state_t` (an unknown state is kept as `Unknown`, as cls decoding does).
pub(crate) fn snap_mirror_state(v: u32) -> MirrorSnapshotState {
    MirrorSnapshotState::from_u8(u8::try_from(v).unwrap_or(u8::MAX))
}

/// `rbd_mirror_image_mode_t` of a mode.
pub(crate) fn mirror_image_mode_raw(mode: MirrorImageMode) -> u32 {
    u32::from(mode.to_u8())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::librbd;

    #[test]
    fn librbd_values_are_the_cls_values() {
        let t = "test";
        for (c, m) in [
            (librbd::RBD_MIRROR_MODE_DISABLED, MirrorMode::Disabled),
            (librbd::RBD_MIRROR_MODE_IMAGE, MirrorMode::Image),
            (librbd::RBD_MIRROR_MODE_POOL, MirrorMode::Pool),
        ] {
            assert_eq!(mirror_mode(c, "op", t).unwrap(), m);
        }
        for (c, d) in [
            (librbd::RBD_MIRROR_PEER_DIRECTION_RX, MirrorPeerDirection::Rx),
            (librbd::RBD_MIRROR_PEER_DIRECTION_TX, MirrorPeerDirection::Tx),
            (librbd::RBD_MIRROR_PEER_DIRECTION_RX_TX, MirrorPeerDirection::RxTx),
        ] {
            assert_eq!(peer_direction(c, "op", t).unwrap(), d);
        }
        for (c, m) in [
            (librbd::RBD_MIRROR_IMAGE_MODE_JOURNAL, MirrorImageMode::Journal),
            (librbd::RBD_MIRROR_IMAGE_MODE_SNAPSHOT, MirrorImageMode::Snapshot),
        ] {
            assert_eq!(mirror_image_mode(c, "op", t).unwrap(), m);
            assert_eq!(mirror_image_mode_raw(m), c);
        }
        for (c, s) in [
            (librbd::RBD_MIRROR_IMAGE_DISABLING, MirrorImageState::Disabling),
            (librbd::RBD_MIRROR_IMAGE_ENABLED, MirrorImageState::Enabled),
            (librbd::RBD_MIRROR_IMAGE_DISABLED, MirrorImageState::Disabled),
        ] {
            assert_eq!(mirror_image_state(c, "op", t).unwrap(), s);
        }
        for (c, s) in [
            (librbd::MIRROR_IMAGE_STATUS_STATE_UNKNOWN, MirrorImageStatusState::Unknown),
            (librbd::MIRROR_IMAGE_STATUS_STATE_ERROR, MirrorImageStatusState::Error),
            (librbd::MIRROR_IMAGE_STATUS_STATE_SYNCING, MirrorImageStatusState::Syncing),
            (librbd::MIRROR_IMAGE_STATUS_STATE_STARTING_REPLAY, MirrorImageStatusState::StartingReplay),
            (librbd::MIRROR_IMAGE_STATUS_STATE_REPLAYING, MirrorImageStatusState::Replaying),
            (librbd::MIRROR_IMAGE_STATUS_STATE_STOPPING_REPLAY, MirrorImageStatusState::StoppingReplay),
            (librbd::MIRROR_IMAGE_STATUS_STATE_STOPPED, MirrorImageStatusState::Stopped),
        ] {
            assert_eq!(mirror_image_status_state(c, "op", t).unwrap(), s);
        }
        for (c, s) in [
            (librbd::RBD_SNAP_MIRROR_STATE_PRIMARY, MirrorSnapshotState::Primary),
            (librbd::RBD_SNAP_MIRROR_STATE_PRIMARY_DEMOTED, MirrorSnapshotState::PrimaryDemoted),
            (librbd::RBD_SNAP_MIRROR_STATE_NON_PRIMARY, MirrorSnapshotState::NonPrimary),
            (librbd::RBD_SNAP_MIRROR_STATE_NON_PRIMARY_DEMOTED, MirrorSnapshotState::NonPrimaryDemoted),
        ] {
            assert_eq!(snap_mirror_state(c), s);
        }
        assert!(matches!(mirror_mode(9, "rbd_mirror_mode_get", t), Err(RadosError::BadReply { .. })));
        assert!(mirror_image_status_state(42, "op", t).is_err());
        assert!(mirror_image_mode(1 << 20, "op", t).is_err());
    }

    #[test]
    fn librbd_feature_bits_are_rbd_types_bits() {
        use rbd_types::features::*;
        for (c, f) in [
            (librbd::RBD_FEATURE_LAYERING, LAYERING),
            (librbd::RBD_FEATURE_STRIPINGV2, STRIPINGV2),
            (librbd::RBD_FEATURE_EXCLUSIVE_LOCK, EXCLUSIVE_LOCK),
            (librbd::RBD_FEATURE_OBJECT_MAP, OBJECT_MAP),
            (librbd::RBD_FEATURE_FAST_DIFF, FAST_DIFF),
            (librbd::RBD_FEATURE_DEEP_FLATTEN, DEEP_FLATTEN),
            (librbd::RBD_FEATURE_JOURNALING, JOURNALING),
            (librbd::RBD_FEATURE_DATA_POOL, DATA_POOL),
            (librbd::RBD_FEATURE_OPERATIONS, OPERATIONS),
            (librbd::RBD_FEATURE_MIGRATING, MIGRATING),
            (librbd::RBD_FEATURE_NON_PRIMARY, NON_PRIMARY),
            (librbd::RBD_FEATURE_DIRTY_CACHE, DIRTY_CACHE),
            (librbd::RBD_OPERATION_FEATURE_CLONE_CHILD, OPERATION_CLONE_CHILD),
        ] {
            assert_eq!(u64::from(c), f);
        }
    }
}
