//! The live tail against a journal librbd writes on the lab (site-a): entries arrive in
//! order across object sets, a committed position is what `rbd journal status` shows and
//! where a reopened tail resumes, and a corrupt entry stops the tail with an error naming
//! the object and offset.

#[path = "../../../tests/support/lab.rs"]
mod lab;

use std::time::Duration;

use journal_reader::event::{ClientMeta, Event, EventEntry};
use journal_reader::follower::FollowError;
use journal_reader::tail::{register_client, unregister_client, JournalTail, TailError, TailOptions};
use journal_reader::{ClientData, EntryError};
use rados_ffi::Rados;
use rbd_types::cls_journal::data_object_name;
use rbd_types::Encode;

const CLIENT: &str = "tail-test";

fn options() -> TailOptions {
    // Reads smaller than one entry: every entry is completed across reads.
    TailOptions {
        poll_interval: Duration::from_millis(200),
        fetch_bytes: Some(4096),
        ..TailOptions::default()
    }
}

/// Takes entries until `writes` AioWrite events were seen; returns their offsets.
async fn take_writes(tail: &mut JournalTail, writes: usize) -> Vec<u64> {
    let mut offsets = Vec::new();
    while offsets.len() < writes {
        let played = tokio::time::timeout(Duration::from_secs(60), tail.next())
            .await
            .expect("entries within 60 s")
            .expect("tail entry");
        let ev = EventEntry::decode_payload(&played.entry.payload).expect("event decodes");
        match ev.event {
            Event::AioWrite { offset, length, data } => {
                assert_eq!((length, data.len()), (4096, 4096));
                offsets.push(offset);
            }
            Event::AioFlush => {}
            other => panic!("unexpected event {other:?}"),
        }
    }
    offsets
}

struct Cleanup(lab::Site, String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.0.rbd_ok(&["rm", "--no-progress", &format!("{}/{}", lab::POOL, self.1)]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tail_follows_commits_and_resumes() {
    let site = lab::site("site-a");
    let name = lab::unique("tail");
    let spec = format!("{}/{name}", lab::POOL);
    let _cleanup = Cleanup(site.clone(), name.clone());
    site.rbd(&[
        "create",
        "--size",
        "64M",
        "--image-feature",
        "exclusive-lock,journaling",
        "--journal-splay-width",
        "2",
        "--journal-object-size",
        "64K",
        &spec,
    ]);
    let info = site.rbd_json(&["info", &spec]);
    let image_id = info["id"].as_str().expect("image id").to_owned();
    let rados = Rados::connect(&site.admin_config()).await.expect("connect");
    let io = rados.ioctx(lab::POOL, "").await.expect("ioctx");

    let data = ClientData { client_meta: ClientMeta::Cli }.to_bytes();
    register_client(&io, &image_id, CLIENT, &data).await.expect("register our client");
    let err = register_client(&io, &image_id, CLIENT, &data).await.expect_err("registered twice");
    assert!(matches!(err, TailError::Rados(ref e) if e.errno() == Some(libc::EEXIST)), "{err}");

    let missing = JournalTail::open(&rados, lab::POOL, "", &image_id, "nobody", options()).await;
    assert!(
        matches!(missing, Err(TailError::Follow(FollowError::ClientNotRegistered { .. }))),
        "{missing:?}"
    );

    let mut tail =
        JournalTail::open(&rados, lab::POOL, "", &image_id, CLIENT, options()).await.expect("open tail");
    assert!(tail.try_next().await.expect("empty journal").is_none());

    // 64 sequential 4 KiB writes: about 270 KB of entries over 128 KiB object sets.
    site.bench_one_at_a_time(&spec, "seq", "4K", "256K");
    let offsets = take_writes(&mut tail, 64).await;
    assert_eq!(offsets, (0..64).map(|i| i * 4096).collect::<Vec<u64>>(), "in write order");
    assert!(tail.header().active_set >= 1, "the writes crossed object sets: {:?}", tail.header().active_set);

    // Commit, and `rbd journal status` shows exactly that position for our client.
    let position = tail.position().clone();
    tail.commit(&position).await.expect("commit");
    let status = site.rbd(&["journal", "status", "--pool", lab::POOL, "--image", &name]);
    let printed: Vec<String> = position
        .object_positions
        .iter()
        .map(|p| {
            format!("[object_number={}, tag_tid={}, entry_tid={}]", p.object_number, p.tag_tid, p.entry_tid)
        })
        .collect();
    let want =
        format!("[id={CLIENT}, commit_position=[positions=[{}]], state=connected]", printed.join(", "));
    assert!(status.contains(&want), "{want}\nnot in\n{status}");
    drop(tail);

    // A reopened tail resumes after the committed position: only new entries arrive.
    let mut tail =
        JournalTail::open(&rados, lab::POOL, "", &image_id, CLIENT, options()).await.expect("reopen");
    // Only what followed the last write taken (librbd's closing flush) is left.
    while let Some(played) = tail.try_next().await.expect("reopened tail") {
        let ev = EventEntry::decode_payload(&played.entry.payload).expect("event");
        assert!(matches!(ev.event, Event::AioFlush), "no write is replayed twice: {:?}", ev.event);
    }
    site.bench_one_at_a_time(&spec, "seq", "4K", "16K");
    let first_new = loop {
        let played =
            tokio::time::timeout(Duration::from_secs(60), tail.next()).await.expect("entry").expect("entry");
        let ev = EventEntry::decode_payload(&played.entry.payload).expect("event");
        if matches!(ev.event, Event::AioWrite { .. }) {
            break played;
        }
    };
    assert_eq!(take_writes(&mut tail, 3).await, vec![4096, 8192, 12288]);
    drop(tail);

    // Corrupt the first new write's payload: a tail reopened at the commit position stops
    // there with an error naming the object and offset, and delivers nothing wrong.
    let object = data_object_name(io.pool_id(), &image_id, first_new.object_number);
    let at = first_new.entry.offset as u64 + 29 + 100;
    let original = io.read(&object, at, 1).await.expect("read a payload byte");
    io.write(&object, at, &[original[0] ^ 0xff]).await.expect("corrupt a payload byte");
    let mut tail =
        JournalTail::open(&rados, lab::POOL, "", &image_id, CLIENT, options()).await.expect("reopen");
    let err = loop {
        match tail.try_next().await {
            Ok(Some(played)) => assert!(
                played.entry.offset < first_new.entry.offset
                    || played.object_number != first_new.object_number
            ),
            Ok(None) => panic!("the corrupt entry must not read as the end of the journal"),
            Err(e) => break e,
        }
    };
    println!("corrupt entry: {err}");
    match &err {
        TailError::Follow(FollowError::Entry(EntryError::BadCrc { object: o, offset, .. })) => {
            assert_eq!(o, &object);
            assert_eq!(*offset, first_new.entry.offset);
        }
        other => panic!("expected a CRC error, got {other:?}"),
    }
    io.write(&object, at, &original).await.expect("repair");

    unregister_client(&io, &image_id, CLIENT).await.expect("unregister");
    let missing = JournalTail::open(&rados, lab::POOL, "", &image_id, CLIENT, options()).await;
    assert!(
        matches!(missing, Err(TailError::Follow(FollowError::ClientNotRegistered { .. }))),
        "{missing:?}"
    );
}
