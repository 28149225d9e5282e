//! What rbd-mirror daemon instances say to each other through RADOS watch/notify
//! (ceph-formats.md §5.5), as the stock daemon encodes it
//! (`src/tools/rbd_mirror/{leader_watcher,instance_watcher,image_map}/Types.cc`):
//!
//! * [`LeaderNotify`]: on `rbd_mirror_leader`, sent by the leader (heartbeat, lock
//!   acquired, lock released); every watcher acks with an empty payload;
//! * [`InstanceNotify`]: on `rbd_mirror_instance.<id>`, the leader's image acquire /
//!   release / peer-image-removed requests and the sync throttling requests; the receiver
//!   acks with a [`NotifyAck`] once it has done what was asked;
//! * [`PolicyData`]: the policy's payload stored in each image map entry.
//!
//! Unknown operations decode to an `Unknown` variant (acked and ignored, as stock does),
//! never to an error.

use bytes::Bytes;

use crate::encoding::{Decode, DecodeResult, Decoder, Encode, Encoder};

/// `rbd::mirror::leader_watcher::NotifyMessage`: `ENCODE_START(1, 1) u32 op` (no payloads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderNotify {
    /// 0: the leader is alive (every `rbd_mirror_leader_heartbeat_interval`).
    Heartbeat,
    /// 1: a new leader holds the lock.
    LockAcquired,
    /// 2: the leader released the lock.
    LockReleased,
    /// An op this daemon does not know.
    Unknown(u32),
}

impl LeaderNotify {
    fn op(self) -> u32 {
        match self {
            LeaderNotify::Heartbeat => 0,
            LeaderNotify::LockAcquired => 1,
            LeaderNotify::LockReleased => 2,
            LeaderNotify::Unknown(op) => op,
        }
    }
}

impl Encode for LeaderNotify {
    fn encode(&self, e: &mut Encoder) {
        e.envelope(1, 1, |e| e.u32(self.op()));
    }
}

impl Decode for LeaderNotify {
    fn decode(d: &mut Decoder<'_>) -> DecodeResult<Self> {
        d.envelope("leader_watcher::NotifyMessage", 1, |d, _| {
            Ok(match d.u32("notify_op")? {
                0 => LeaderNotify::Heartbeat,
                1 => LeaderNotify::LockAcquired,
                2 => LeaderNotify::LockReleased,
                op => LeaderNotify::Unknown(op),
            })
        })
    }
}

/// `rbd::mirror::instance_watcher::NotifyMessage`: `ENCODE_START(2, 2) u32 op, payload`;
/// every payload starts with the sender's `u64 request_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceNotify {
    /// 0: start replaying this image.
    ImageAcquire {
        /// The sender's request sequence number (echoed in the ack).
        request_id: u64,
        /// The image.
        global_image_id: String,
    },
    /// 1: stop replaying this image (ack once stopped).
    ImageRelease {
        /// As above.
        request_id: u64,
        /// The image.
        global_image_id: String,
    },
    /// 2: the peer no longer has this image (the replayer restarts and finds out).
    PeerImageRemoved {
        /// As above.
        request_id: u64,
        /// The image.
        global_image_id: String,
        /// The mirror uuid of the peer that removed it.
        peer_mirror_uuid: String,
    },
    /// 3: to the leader: may this instance start a sync (`rbd_mirror_concurrent_image_syncs`)?
    SyncRequest {
        /// As above.
        request_id: u64,
        /// The sync (the global image id).
        sync_id: String,
    },
    /// 4: from the leader: the sync may start; acked when the sync has finished.
    SyncStart {
        /// As above.
        request_id: u64,
        /// The sync.
        sync_id: String,
    },
    /// An op this daemon does not know (acked with an empty payload).
    Unknown(u32),
}

impl Encode for InstanceNotify {
    fn encode(&self, e: &mut Encoder) {
        e.envelope(2, 2, |e| match self {
            InstanceNotify::ImageAcquire { request_id, global_image_id } => {
                e.u32(0);
                e.u64(*request_id);
                e.string(global_image_id);
            }
            InstanceNotify::ImageRelease { request_id, global_image_id } => {
                e.u32(1);
                e.u64(*request_id);
                e.string(global_image_id);
            }
            InstanceNotify::PeerImageRemoved { request_id, global_image_id, peer_mirror_uuid } => {
                e.u32(2);
                e.u64(*request_id);
                e.string(global_image_id);
                e.string(peer_mirror_uuid);
            }
            InstanceNotify::SyncRequest { request_id, sync_id } => {
                e.u32(3);
                e.u64(*request_id);
                e.string(sync_id);
            }
            InstanceNotify::SyncStart { request_id, sync_id } => {
                e.u32(4);
                e.u64(*request_id);
                e.string(sync_id);
            }
            InstanceNotify::Unknown(op) => e.u32(*op),
        });
    }
}

impl Decode for InstanceNotify {
    fn decode(d: &mut Decoder<'_>) -> DecodeResult<Self> {
        d.envelope("instance_watcher::NotifyMessage", 2, |d, _| {
            Ok(match d.u32("notify_op")? {
                0 => InstanceNotify::ImageAcquire {
                    request_id: d.u64("request_id")?,
                    global_image_id: d.string("global_image_id")?,
                },
                1 => InstanceNotify::ImageRelease {
                    request_id: d.u64("request_id")?,
                    global_image_id: d.string("global_image_id")?,
                },
                2 => InstanceNotify::PeerImageRemoved {
                    request_id: d.u64("request_id")?,
                    global_image_id: d.string("global_image_id")?,
                    peer_mirror_uuid: d.string("peer_mirror_uuid")?,
                },
                3 => InstanceNotify::SyncRequest {
                    request_id: d.u64("request_id")?,
                    sync_id: d.string("sync_id")?,
                },
                4 => InstanceNotify::SyncStart {
                    request_id: d.u64("request_id")?,
                    sync_id: d.string("sync_id")?,
                },
                op => InstanceNotify::Unknown(op),
            })
        })
    }
}

impl InstanceNotify {
    /// The request id, for the known ops.
    pub fn request_id(&self) -> Option<u64> {
        match self {
            InstanceNotify::ImageAcquire { request_id, .. }
            | InstanceNotify::ImageRelease { request_id, .. }
            | InstanceNotify::PeerImageRemoved { request_id, .. }
            | InstanceNotify::SyncRequest { request_id, .. }
            | InstanceNotify::SyncStart { request_id, .. } => Some(*request_id),
            InstanceNotify::Unknown(_) => None,
        }
    }
}

/// `instance_watcher::NotifyAckPayload` (no envelope): `string instance_id` (the
/// *sender's* instance id, echoed), `u64 request_id`, `i32 ret_val` (0 or a negative errno).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyAck {
    /// The instance id of the notification's sender.
    pub instance_id: String,
    /// The request id of the notification.
    pub request_id: u64,
    /// 0, or a negative errno.
    pub ret_val: i32,
}

impl Encode for NotifyAck {
    fn encode(&self, e: &mut Encoder) {
        e.string(&self.instance_id);
        e.u64(self.request_id);
        e.i32(self.ret_val);
    }
}

impl Decode for NotifyAck {
    fn decode(d: &mut Decoder<'_>) -> DecodeResult<Self> {
        Ok(NotifyAck {
            instance_id: d.string("instance_id")?,
            request_id: d.u64("request_id")?,
            ret_val: d.i32("ret_val")?,
        })
    }
}

/// `rbd::mirror::image_map::PolicyData`: `ENCODE_START(1, 1) u32 policy_meta_type`; the only
/// type is `NONE = 0`, with no body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PolicyData;

impl PolicyData {
    /// The encoding stored in an image map entry's `data`.
    pub fn none() -> Bytes {
        PolicyData.to_bytes()
    }
}

impl Encode for PolicyData {
    fn encode(&self, e: &mut Encoder) {
        e.envelope(1, 1, |e| e.u32(0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn leader_notifications() {
        assert_eq!(hex(&LeaderNotify::Heartbeat.to_bytes()), "01010400000000000000");
        assert_eq!(hex(&LeaderNotify::LockReleased.to_bytes()), "01010400000002000000");
        for n in [
            LeaderNotify::Heartbeat,
            LeaderNotify::LockAcquired,
            LeaderNotify::LockReleased,
            LeaderNotify::Unknown(9),
        ] {
            assert_eq!(LeaderNotify::decode_all(&n.to_bytes()).unwrap(), n);
        }
        // A newer writer's trailing fields are skipped; a truncated message is an error.
        let newer = Bytes::from_static(&[2, 1, 6, 0, 0, 0, 1, 0, 0, 0, 0xaa, 0xbb]);
        assert_eq!(LeaderNotify::decode_all(&newer).unwrap(), LeaderNotify::LockAcquired);
        assert!(LeaderNotify::decode_all(&Bytes::from_static(&[1, 1, 4, 0])).is_err());
    }

    #[test]
    fn instance_notifications() {
        let acquire = InstanceNotify::ImageAcquire { request_id: 7, global_image_id: "g".into() };
        // ENCODE_START(2,2) len=0x11; op 0; request_id 7; string "g".
        assert_eq!(hex(&acquire.to_bytes()), "0202110000000000000007000000000000000100000067");
        let all = [
            acquire,
            InstanceNotify::ImageRelease { request_id: 8, global_image_id: "g".into() },
            InstanceNotify::PeerImageRemoved {
                request_id: 9,
                global_image_id: "g".into(),
                peer_mirror_uuid: "u".into(),
            },
            InstanceNotify::SyncRequest { request_id: 10, sync_id: "s".into() },
            InstanceNotify::SyncStart { request_id: 11, sync_id: "s".into() },
            InstanceNotify::Unknown(42),
        ];
        for n in all {
            assert_eq!(InstanceNotify::decode_all(&n.to_bytes()).unwrap(), n);
        }
        let garbage = Bytes::from_static(&[2, 2, 3, 0, 0, 0, 0, 0]);
        assert!(InstanceNotify::decode_all(&garbage).is_err());
    }

    #[test]
    fn ack_and_policy() {
        let ack = NotifyAck { instance_id: "4123".into(), request_id: 3, ret_val: -16 };
        assert_eq!(hex(&ack.to_bytes()), "04000000343132330300000000000000f0ffffff");
        assert_eq!(NotifyAck::decode_all(&ack.to_bytes()).unwrap(), ack);
        assert_eq!(hex(&PolicyData::none()), "01010400000000000000");
    }
}
