//! Fuzz every payload decoder directly.
#![no_main]

use bytes::Bytes;
use rbd_types::cls_journal::{Client, ObjectSetPosition, Tag};
use rbd_types::encoding::{Decode, Encode};
use journal_reader::event::{ClientData, EventEntry, TagData};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let b = Bytes::copy_from_slice(data);
    if let Ok(e) = EventEntry::decode_payload(&b) {
        // Whatever decodes must re-encode and decode to the same value.
        let again = EventEntry::decode_payload(&e.encode_payload()).expect("re-decode");
        assert_eq!(again, e);
    }
    let _ = ClientData::decode_all(&b);
    let _ = TagData::decode_all(&b);
    let _ = Client::decode_all(&b);
    let _ = Tag::decode_all(&b);
    if let Ok(p) = ObjectSetPosition::decode_all(&b) {
        assert_eq!(ObjectSetPosition::decode_all(&p.to_bytes()).expect("re-decode"), p);
    }
});
