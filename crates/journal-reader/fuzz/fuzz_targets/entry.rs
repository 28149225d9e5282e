//! Fuzz entry framing (+ CRC) and the events inside valid entries.
#![no_main]

use bytes::Bytes;
use journal_reader::entry::EntryIter;
use journal_reader::event::EventEntry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let b = Bytes::copy_from_slice(data);
    let mut it = EntryIter::new("fuzz", &b);
    for e in it.by_ref() {
        match e {
            Ok(e) => {
                let _ = EventEntry::decode_payload(&e.payload);
            }
            Err(_) => break,
        }
    }
    assert!(it.offset() <= b.len());
    // Also without CRC checks, so mutated payloads reach the event decoder.
    for e in EntryIter::new("fuzz", &b).without_crc_check().flatten() {
        let _ = EventEntry::decode_payload(&e.payload);
    }
});
