//! cls_journal types and the journal header object.
//!
//! Verified against src/cls/journal/cls_journal_types.cc (Pacific):
//! `ObjectPosition`, `ObjectSetPosition`, `Client` (with the `u8` state) and
//! `Tag` are all `ENCODE_START(1, 1)` and decoded with `DECODE_START(1)`.
//! Header omap keys and method argument layouts follow ceph-formats.md §2.2
//! and §2.3 (src/cls/journal/cls_journal.cc, cls_journal_client.cc).

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::encoding::{Decode, DecodeError, DecodeResult, Decoder, Encode, Encoder};

/// Name of the journal header object for an image (`journal.<image id>`).
pub fn header_object_name(image_id: &str) -> String {
    format!("journal.{image_id}")
}

/// Name of a journal data object:
/// `journal_data.<header pool id>.<image id>.<object number>`.
pub fn data_object_name(header_pool_id: i64, image_id: &str, object_number: u64) -> String {
    format!("journal_data.{header_pool_id}.{image_id}.{object_number}")
}

/// Position of one entry inside a journal data object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ObjectPosition {
    /// Journal data object number.
    pub object_number: u64,
    /// Tag tid of the entry.
    pub tag_tid: u64,
    /// Entry tid of the entry (per tag).
    pub entry_tid: u64,
}

impl Decode for ObjectPosition {
    fn decode(d: &mut Decoder<'_>) -> DecodeResult<Self> {
        d.envelope("ObjectPosition", 1, |d, _v| {
            Ok(ObjectPosition {
                object_number: d.u64("object_number")?,
                tag_tid: d.u64("tag_tid")?,
                entry_tid: d.u64("entry_tid")?,
            })
        })
    }
}

impl Encode for ObjectPosition {
    fn encode(&self, e: &mut Encoder) {
        e.envelope(1, 1, |e| {
            e.u64(self.object_number);
            e.u64(self.tag_tid);
            e.u64(self.entry_tid);
        });
    }
}

/// A journal client's commit position: one [`ObjectPosition`] per splay
/// offset, newest first (at most splay width entries).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ObjectSetPosition {
    /// Positions, most recent first.
    pub object_positions: Vec<ObjectPosition>,
}

impl ObjectSetPosition {
    /// The most recently committed position, if any.
    pub fn front(&self) -> Option<&ObjectPosition> {
        self.object_positions.first()
    }

    /// Records `pos` as committed: replaces the entry with the same splay
    /// offset and moves it to the front (as JournalMetadata does).
    pub fn advance(&mut self, pos: ObjectPosition, splay_width: u8) {
        let w = u64::from(splay_width.max(1));
        let offset = pos.object_number % w;
        self.object_positions.retain(|p| p.object_number % w != offset);
        self.object_positions.insert(0, pos);
        self.object_positions.truncate(usize::from(splay_width.max(1)));
    }
}

impl Decode for ObjectSetPosition {
    fn decode(d: &mut Decoder<'_>) -> DecodeResult<Self> {
        d.envelope("ObjectSetPosition", 1, |d, _v| {
            Ok(ObjectSetPosition { object_positions: d.vec("object_positions", ObjectPosition::decode)? })
        })
    }
}

impl Encode for ObjectSetPosition {
    fn encode(&self, e: &mut Encoder) {
        e.envelope(1, 1, |e| {
            e.vec(&self.object_positions, |e, p| p.encode(e));
        });
    }
}

/// Journal client state (`cls::journal::ClientState`, encoded as `u8`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ClientState {
    /// `CLIENT_STATE_CONNECTED = 0`.
    #[default]
    Connected,
    /// `CLIENT_STATE_DISCONNECTED = 1`.
    Disconnected,
    /// Any other value (kept so it round-trips).
    Unknown(u8),
}

impl ClientState {
    /// Wire value.
    pub fn to_u8(self) -> u8 {
        match self {
            ClientState::Connected => 0,
            ClientState::Disconnected => 1,
            ClientState::Unknown(v) => v,
        }
    }
    /// From the wire value.
    pub fn from_u8(v: u8) -> Self {
        match v {
            0 => ClientState::Connected,
            1 => ClientState::Disconnected,
            v => ClientState::Unknown(v),
        }
    }
}

/// A registered journal client (`client_<id>` omap value).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Client {
    /// Client id (`""` is librbd's own image client).
    pub id: String,
    /// Opaque client data; for RBD an encoded
    /// `journal_reader::event::ClientData`.
    pub data: Bytes,
    /// Commit position.
    pub commit_position: ObjectSetPosition,
    /// Connected / disconnected.
    pub state: ClientState,
}

impl Decode for Client {
    fn decode(d: &mut Decoder<'_>) -> DecodeResult<Self> {
        d.envelope("Client", 1, |d, _v| {
            Ok(Client {
                id: d.string("client.id")?,
                data: d.bytes("client.data")?,
                commit_position: ObjectSetPosition::decode(d)?,
                state: ClientState::from_u8(d.u8("client.state")?),
            })
        })
    }
}

impl Encode for Client {
    fn encode(&self, e: &mut Encoder) {
        e.envelope(1, 1, |e| {
            e.string(&self.id);
            e.bytes(&self.data);
            self.commit_position.encode(e);
            e.u8(self.state.to_u8());
        });
    }
}

/// A journal tag (`tag_<%016x tid>` omap value).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Tag {
    /// Tag tid.
    pub tid: u64,
    /// Tag class.
    pub tag_class: u64,
    /// Opaque data; for RBD a `journal_reader::event::TagData`.
    pub data: Bytes,
}

impl Decode for Tag {
    fn decode(d: &mut Decoder<'_>) -> DecodeResult<Self> {
        d.envelope("Tag", 1, |d, _v| {
            Ok(Tag { tid: d.u64("tag.tid")?, tag_class: d.u64("tag.tag_class")?, data: d.bytes("tag.data")? })
        })
    }
}

impl Encode for Tag {
    fn encode(&self, e: &mut Encoder) {
        e.envelope(1, 1, |e| {
            e.u64(self.tid);
            e.u64(self.tag_class);
            e.bytes(&self.data);
        });
    }
}

/// `TAG_CLASS_NEW`: ask `tag_create` to allocate a new tag class.
pub const TAG_CLASS_NEW: u64 = u64::MAX;

/// Omap key prefix of client records.
pub const CLIENT_KEY_PREFIX: &str = "client_";
/// Omap key prefix of tag records.
pub const TAG_KEY_PREFIX: &str = "tag_";

/// Omap key of a client record.
pub fn client_key(id: &str) -> String {
    format!("{CLIENT_KEY_PREFIX}{id}")
}

/// Omap key of a tag record (`tag_` + 16 lower-case hex digits).
pub fn tag_key(tid: u64) -> String {
    format!("{TAG_KEY_PREFIX}{tid:016x}")
}

/// Errors from interpreting the journal header omap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// A required key is missing.
    #[error("journal header key {key:?} is missing")]
    MissingKey {
        /// The key.
        key: &'static str,
    },
    /// A value failed to decode.
    #[error("journal header key {key:?}: {source}")]
    Value {
        /// The omap key.
        key: String,
        /// The decoding error.
        #[source]
        source: DecodeError,
    },
    /// A `tag_` key whose suffix is not 16 hex digits.
    #[error("malformed journal header key {key:?}")]
    MalformedKey {
        /// The omap key.
        key: String,
    },
}

/// The journal metadata stored in the omap of `journal.<image id>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalHeader {
    /// log2 of the data object size.
    pub order: u8,
    /// Number of data objects per object set.
    pub splay_width: u8,
    /// Data pool id, `-1` = the header's pool.
    pub pool_id: i64,
    /// Oldest object set that may still exist.
    pub minimum_set: u64,
    /// Object set currently being appended to.
    pub active_set: u64,
    /// Next tag tid to allocate (absent in very old headers).
    pub next_tag_tid: Option<u64>,
    /// Next tag class to allocate (absent in very old headers).
    pub next_tag_class: Option<u64>,
    /// Registered clients by id.
    pub clients: BTreeMap<String, Client>,
    /// Tags by tid.
    pub tags: BTreeMap<u64, Tag>,
}

fn decode_value<T: Decode>(key: &str, value: &Bytes) -> Result<T, HeaderError> {
    T::decode_all(value).map_err(|source| HeaderError::Value { key: key.to_owned(), source })
}

fn scalar<T>(
    key: &str,
    value: &Bytes,
    f: impl FnOnce(&mut Decoder<'_>) -> DecodeResult<T>,
) -> Result<T, HeaderError> {
    let mut d = Decoder::new(value);
    f(&mut d)
        .and_then(|v| d.finish("header value").map(|()| v))
        .map_err(|source| HeaderError::Value { key: key.to_owned(), source })
}

impl JournalHeader {
    /// Builds the header from the omap key/value pairs of the header object.
    /// Unknown keys are ignored.
    pub fn from_omap<'k, I>(entries: I) -> Result<Self, HeaderError>
    where
        I: IntoIterator<Item = (&'k str, &'k Bytes)>,
    {
        let mut order = None;
        let mut splay_width = None;
        let mut pool_id = None;
        let mut minimum_set = None;
        let mut active_set = None;
        let mut h = JournalHeader::default();
        for (key, value) in entries {
            match key {
                "order" => order = Some(scalar(key, value, |d| d.u8("order"))?),
                "splay_width" => splay_width = Some(scalar(key, value, |d| d.u8("splay_width"))?),
                "pool_id" => pool_id = Some(scalar(key, value, |d| d.i64("pool_id"))?),
                "minimum_set" => minimum_set = Some(scalar(key, value, |d| d.u64("minimum_set"))?),
                "active_set" => active_set = Some(scalar(key, value, |d| d.u64("active_set"))?),
                "next_tag_tid" => h.next_tag_tid = Some(scalar(key, value, |d| d.u64("next_tag_tid"))?),
                "next_tag_class" => h.next_tag_class = Some(scalar(key, value, |d| d.u64("next_tag_class"))?),
                _ => {
                    if let Some(_id) = key.strip_prefix(CLIENT_KEY_PREFIX) {
                        let c: Client = decode_value(key, value)?;
                        h.clients.insert(c.id.clone(), c);
                    } else if let Some(hex) = key.strip_prefix(TAG_KEY_PREFIX) {
                        if hex.len() != 16 || u64::from_str_radix(hex, 16).is_err() {
                            return Err(HeaderError::MalformedKey { key: key.to_owned() });
                        }
                        let t: Tag = decode_value(key, value)?;
                        h.tags.insert(t.tid, t);
                    }
                }
            }
        }
        h.order = order.ok_or(HeaderError::MissingKey { key: "order" })?;
        h.splay_width = splay_width.ok_or(HeaderError::MissingKey { key: "splay_width" })?;
        h.pool_id = pool_id.ok_or(HeaderError::MissingKey { key: "pool_id" })?;
        h.minimum_set = minimum_set.ok_or(HeaderError::MissingKey { key: "minimum_set" })?;
        h.active_set = active_set.ok_or(HeaderError::MissingKey { key: "active_set" })?;
        Ok(h)
    }

    /// Encodes the header back into omap key/value pairs (for tests and
    /// fixtures; a live daemon never writes the header omap directly).
    pub fn to_omap(&self) -> BTreeMap<String, Bytes> {
        let mut m = BTreeMap::new();
        let enc = |f: &dyn Fn(&mut Encoder)| {
            let mut e = Encoder::new();
            f(&mut e);
            e.into_bytes()
        };
        m.insert("order".into(), enc(&|e| e.u8(self.order)));
        m.insert("splay_width".into(), enc(&|e| e.u8(self.splay_width)));
        m.insert("pool_id".into(), enc(&|e| e.i64(self.pool_id)));
        m.insert("minimum_set".into(), enc(&|e| e.u64(self.minimum_set)));
        m.insert("active_set".into(), enc(&|e| e.u64(self.active_set)));
        if let Some(v) = self.next_tag_tid {
            m.insert("next_tag_tid".into(), enc(&|e| e.u64(v)));
        }
        if let Some(v) = self.next_tag_class {
            m.insert("next_tag_class".into(), enc(&|e| e.u64(v)));
        }
        for c in self.clients.values() {
            m.insert(client_key(&c.id), c.to_bytes());
        }
        for t in self.tags.values() {
            m.insert(tag_key(t.tid), t.to_bytes());
        }
        m
    }

    /// Size of one data object (`1 << order`).
    pub fn object_size(&self) -> u64 {
        1u64.checked_shl(u32::from(self.order)).unwrap_or(0)
    }
}

/// Input encoders for the cls `journal` methods the daemon calls
/// (argument lists are plain concatenations, no outer envelope).
pub mod args {
    use super::*;

    /// `client_register(string id, bl data)` and `client_update_data`.
    pub fn client_register(id: &str, data: &[u8]) -> Bytes {
        let mut e = Encoder::new();
        e.string(id);
        e.bytes(data);
        e.into_bytes()
    }

    /// `client_update_data(string id, bl data)`.
    pub fn client_update_data(id: &str, data: &[u8]) -> Bytes {
        client_register(id, data)
    }

    /// `client_update_state(string id, u8 state)`.
    pub fn client_update_state(id: &str, state: ClientState) -> Bytes {
        let mut e = Encoder::new();
        e.string(id);
        e.u8(state.to_u8());
        e.into_bytes()
    }

    /// `client_commit(string id, ObjectSetPosition)`.
    pub fn client_commit(id: &str, position: &ObjectSetPosition) -> Bytes {
        let mut e = Encoder::new();
        e.string(id);
        position.encode(&mut e);
        e.into_bytes()
    }

    /// `get_client(string id)` / `client_unregister(string id)`.
    pub fn client_id(id: &str) -> Bytes {
        let mut e = Encoder::new();
        e.string(id);
        e.into_bytes()
    }

    /// `client_list(string start_after, u64 max_return)`.
    pub fn client_list(start_after: &str, max_return: u64) -> Bytes {
        let mut e = Encoder::new();
        e.string(start_after);
        e.u64(max_return);
        e.into_bytes()
    }

    /// `get_tag(u64 tag_tid)`.
    pub fn get_tag(tag_tid: u64) -> Bytes {
        let mut e = Encoder::new();
        e.u64(tag_tid);
        e.into_bytes()
    }

    /// `tag_create(u64 tag_tid, u64 tag_class, bl data)`.
    pub fn tag_create(tag_tid: u64, tag_class: u64, data: &[u8]) -> Bytes {
        let mut e = Encoder::new();
        e.u64(tag_tid);
        e.u64(tag_class);
        e.bytes(data);
        e.into_bytes()
    }

    /// `tag_list(u64 start_after_tag_tid, u64 max_return, string client_id,
    /// optional<u64> tag_class)`.
    pub fn tag_list(
        start_after_tag_tid: u64,
        max_return: u64,
        client_id: &str,
        tag_class: Option<u64>,
    ) -> Bytes {
        let mut e = Encoder::new();
        e.u64(start_after_tag_tid);
        e.u64(max_return);
        e.string(client_id);
        e.optional(tag_class.as_ref(), |e, v| e.u64(*v));
        e.into_bytes()
    }

    /// Decodes a `client_list` reply (`set<Client>`).
    pub fn decode_client_list(reply: &Bytes) -> DecodeResult<Vec<Client>> {
        let mut d = Decoder::new(reply);
        let v = d.vec("clients", Client::decode)?;
        d.finish("client_list reply")?;
        Ok(v)
    }

    /// Decodes a `tag_list` reply (`set<Tag>`).
    pub fn decode_tag_list(reply: &Bytes) -> DecodeResult<Vec<Tag>> {
        let mut d = Decoder::new(reply);
        let v = d.vec("tags", Tag::decode)?;
        d.finish("tag_list reply")?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt<T: Decode + Encode + PartialEq + std::fmt::Debug>(v: &T) {
        let b = v.to_bytes();
        assert_eq!(&T::decode_all(&b).unwrap(), v);
    }

    fn sample_client() -> Client {
        Client {
            id: "mirror-uuid".into(),
            data: Bytes::from_static(b"\x01\x02\x03"),
            commit_position: ObjectSetPosition {
                object_positions: vec![
                    ObjectPosition { object_number: 5, tag_tid: 2, entry_tid: 121 },
                    ObjectPosition { object_number: 4, tag_tid: 2, entry_tid: 120 },
                ],
            },
            state: ClientState::Disconnected,
        }
    }

    #[test]
    fn object_position_layout() {
        let p = ObjectPosition { object_number: 1, tag_tid: 2, entry_tid: 3 };
        let b = p.to_bytes();
        assert_eq!(&b[..6], &[1, 1, 24, 0, 0, 0]);
        assert_eq!(b.len(), 30);
        rt(&p);
    }

    #[test]
    fn round_trips() {
        rt(&ObjectSetPosition::default());
        rt(&sample_client());
        rt(&Client::default());
        rt(&Tag { tid: 123, tag_class: 234, data: Bytes::from_static(b"xyz") });
        assert_eq!(ClientState::from_u8(7), ClientState::Unknown(7));
        assert_eq!(ClientState::Unknown(7).to_u8(), 7);
    }

    #[test]
    fn advance_replaces_same_splay_offset() {
        let mut p = ObjectSetPosition::default();
        let pos = |o, e| ObjectPosition { object_number: o, tag_tid: 1, entry_tid: e };
        p.advance(pos(0, 0), 2);
        p.advance(pos(1, 1), 2);
        p.advance(pos(2, 2), 2);
        assert_eq!(p.object_positions, vec![pos(2, 2), pos(1, 1)]);
    }

    #[test]
    fn header_from_omap_round_trip() {
        let mut h = JournalHeader {
            order: 24,
            splay_width: 4,
            pool_id: -1,
            minimum_set: 1,
            active_set: 3,
            next_tag_tid: Some(3),
            next_tag_class: Some(1),
            ..Default::default()
        };
        let c = sample_client();
        h.clients.insert(c.id.clone(), c);
        h.tags.insert(2, Tag { tid: 2, tag_class: 0, data: Bytes::new() });
        let omap = h.to_omap();
        assert!(omap.contains_key("tag_0000000000000002"));
        let back = JournalHeader::from_omap(omap.iter().map(|(k, v)| (k.as_str(), v))).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.object_size(), 16 << 20);

        let mut bad = omap.clone();
        bad.remove("order");
        assert_eq!(
            JournalHeader::from_omap(bad.iter().map(|(k, v)| (k.as_str(), v))),
            Err(HeaderError::MissingKey { key: "order" })
        );
    }

    #[test]
    fn names() {
        assert_eq!(header_object_name("abc"), "journal.abc");
        assert_eq!(data_object_name(2, "abc", 17), "journal_data.2.abc.17");
    }
}
