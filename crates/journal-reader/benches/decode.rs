//! Decode + CRC-verify a 4 MiB journal object full of 4 KiB AioWrite entries.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use journal_reader::entry::{encode_entry, EntryIter};
use journal_reader::event::{Event, EventEntry};
use rbd_types::encoding::UTime;

const OBJECT_SIZE: usize = 4 << 20;
const WRITE_SIZE: usize = 4096;

fn build_object() -> Bytes {
    let mut buf = BytesMut::with_capacity(OBJECT_SIZE + 8192);
    let data = Bytes::from((0..WRITE_SIZE).map(|i| (i * 31 + 7) as u8).collect::<Vec<u8>>());
    let mut entry_tid = 0u64;
    loop {
        let payload = EventEntry {
            event: Event::AioWrite {
                offset: entry_tid * WRITE_SIZE as u64,
                length: WRITE_SIZE as u64,
                data: data.clone(),
            },
            timestamp: UTime { sec: 1_700_000_000, nsec: entry_tid as u32 },
        }
        .encode_payload();
        if buf.len() + payload.len() + 33 > OBJECT_SIZE {
            break;
        }
        encode_entry(&mut buf, 1, entry_tid, &payload);
        entry_tid += 1;
    }
    buf.freeze()
}

fn decode_all(object: &Bytes) -> (usize, u64) {
    let mut n = 0usize;
    let mut bytes = 0u64;
    for entry in EntryIter::new("journal_data.1.bench.0", object) {
        let entry = entry.expect("valid entry");
        let ev = EventEntry::decode_payload(&entry.payload).expect("valid event");
        if let Event::AioWrite { data, .. } = &ev.event {
            bytes += data.len() as u64;
        }
        n += 1;
    }
    (n, bytes)
}

fn bench_decode(c: &mut Criterion) {
    let object = build_object();
    let (n, _) = decode_all(&object);
    assert!(n > 1000);
    let mut g = c.benchmark_group("journal_object");
    g.throughput(Throughput::Bytes(object.len() as u64));
    g.bench_function("decode_crc_events_4MiB_4KiB_writes", |b| {
        b.iter(|| black_box(decode_all(black_box(&object))))
    });
    g.bench_function("framing_crc_only_4MiB", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for e in EntryIter::new("o", black_box(&object)) {
                n += e.map(|e| e.payload.len()).unwrap_or(0);
            }
            black_box(n)
        })
    });
    g.finish();
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
