//! Fuzz the piecewise reads of a journal data object: `decode_object_at` of bytes that start
//! at an offset into their object (padding follows the object's 8-byte boundaries) and
//! `first_entry_end`, which the tail uses to join an entry split over two reads. The first
//! input byte is the offset.
#![no_main]

use bytes::Bytes;
use journal_reader::entry::first_entry_end;
use journal_reader::{decode_object_at, EventEntry};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((base, rest)) = data.split_first() else { return };
    let base = u64::from(*base);
    let object = Bytes::copy_from_slice(rest);
    if let Ok(decoded) = decode_object_at("journal_data.1.fuzz.0", &object, base) {
        assert!(decoded.consumed + decoded.partial_tail <= object.len());
        for e in &decoded.entries {
            assert!(e.offset as u64 >= base);
            let _ = EventEntry::decode_payload(&e.payload);
        }
        // A first entry that decoded ends where first_entry_end says.
        if let Some(first) = decoded.entries.first() {
            let end = first_entry_end(&object, base).expect("a decoded entry has an end");
            assert!(end <= object.len());
            assert!(first.offset as u64 - base < end as u64);
        }
    }
});
