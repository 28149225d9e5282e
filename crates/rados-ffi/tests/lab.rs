//! rados-ffi against the project's two real Ceph clusters (`tests/lab/lab.sh up`).
//!
//! Every result is checked against what the stock `ceph` / `rados` CLI sees. A missing lab
//! fails these tests with instructions: they never skip.

#[path = "../../../tests/support/lab.rs"]
mod lab;

use std::time::{Duration, Instant};

use bytes::Bytes;

use rados_ffi::{ClusterConfig, IoCtx, Rados, RadosError, WatchEvent, WriteOp};

async fn connect(site: &lab::Site) -> Rados {
    Rados::connect(&site.admin_config()).await.unwrap_or_else(|e| panic!("connecting to {}: {e}", site.name))
}

async fn mirror_pool(site: &lab::Site) -> IoCtx {
    connect(site).await.ioctx(lab::POOL, "").await.expect("opening pool mirror")
}

#[tokio::test(flavor = "multi_thread")]
async fn connects_to_both_sites_and_reads_their_fsids() {
    let a = lab::site("site-a");
    let b = lab::site("site-b");
    let (ra, rb) = (connect(&a).await, connect(&b).await);
    println!("site-a fsid {} (instance {})", ra.fsid(), ra.instance_id());
    println!("site-b fsid {} (instance {})", rb.fsid(), rb.instance_id());
    assert_eq!(ra.fsid(), a.fsid());
    assert_eq!(rb.fsid(), b.fsid());
    assert_ne!(ra.fsid(), rb.fsid(), "the two sites must be distinct clusters");
    for r in [&ra, &rb] {
        let pools = r.pool_list().await.expect("pool list");
        assert!(pools.iter().any(|p| p == lab::POOL), "pool mirror missing from {pools:?}");
        let id = r.pool_lookup(lab::POOL).await.expect("pool lookup");
        assert!(id > 0);
        assert_eq!(r.pool_reverse_lookup(id).await.expect("reverse lookup"), lab::POOL);
        assert!(r.pool_reverse_lookup(9999).await.expect_err("no pool 9999").is_not_found());
        let missing = r.pool_lookup("no-such-pool").await.expect_err("lookup of a missing pool");
        assert!(missing.is_not_found(), "{missing}");
    }
    // mon_command and config reads: what `ceph fsid` / `ceph config get` print.
    let (out, _) = ra
        .mon_command(&serde_json::json!({"prefix": "fsid", "format": "json"}), Default::default())
        .await
        .expect("mon command fsid");
    let v: serde_json::Value = serde_json::from_slice(&out).expect("fsid JSON");
    assert_eq!(v["fsid"], ra.fsid());
    let addr = ra.config_get("mgr", "mgr/prometheus/server_addr").await.expect("config get");
    // lab.sh binds the mgr's prometheus module to the site's own address.
    let site_ip =
        a.mon_host().split("v2:").nth(1).and_then(|r| r.split(':').next()).unwrap_or_default().to_owned();
    assert_eq!(addr.trim(), site_ip);
    let missing = ra.config_key_get("rbd-mirror-rs/test/no-such-key").await.expect("config-key get");
    assert!(missing.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn object_data_omap_and_xattrs_round_trip() {
    let site = lab::site("site-a");
    let io = mirror_pool(&site).await;
    let oid = lab::unique("rados-ffi-obj");

    io.write_full(&oid, b"hello ").await.expect("write_full");
    io.append(&oid, b"world").await.expect("append");
    io.write(&oid, 0, b"H").await.expect("write");
    assert_eq!(&io.read_full(&oid).await.expect("read_full")[..], b"Hello world");
    assert_eq!(&io.read(&oid, 6, 100).await.expect("read")[..], b"world");
    assert_eq!(io.stat(&oid).await.expect("stat").size, 11);
    // The stock CLI agrees.
    let stat = site.rados(&["-p", lab::POOL, "stat", &oid]);
    assert!(stat.contains("size 11"), "{stat}");

    io.omap_set(&oid, &[("k1", b"v1"), ("k2", b"v2"), ("other", b"x")]).await.expect("omap set");
    let all = io.omap_get_all(&oid, "").await.expect("omap get");
    assert_eq!(all.len(), 3);
    assert_eq!(&all["k2"][..], b"v2");
    let prefixed = io.omap_get_all(&oid, "k").await.expect("omap get with prefix");
    assert_eq!(prefixed.keys().collect::<Vec<_>>(), ["k1", "k2"]);
    io.omap_remove(&oid, &["k1"]).await.expect("omap remove");
    let keys = site.rados(&["-p", lab::POOL, "listomapkeys", &oid]);
    assert_eq!(keys.lines().collect::<Vec<_>>(), ["k2", "other"]);

    io.set_xattr(&oid, "user.a", b"1").await.expect("setxattr");
    io.set_xattr(&oid, "user.b", b"22").await.expect("setxattr");
    assert_eq!(&io.xattr(&oid, "user.b").await.expect("getxattr")[..], b"22");
    io.remove_xattr(&oid, "user.a").await.expect("rmxattr");
    let xattrs = io.xattrs(&oid).await.expect("xattrs");
    assert_eq!(xattrs.keys().collect::<Vec<_>>(), ["user.b"]);

    // A compound write op is applied atomically, and fails as a whole.
    let mut op = WriteOp::new();
    op.assert_exists().truncate(5).omap_clear();
    op.omap_set(&[("after", b"op")]).expect("op omap set");
    io.operate(&oid, op).await.expect("operate");
    assert_eq!(&io.read_full(&oid).await.expect("read")[..], b"Hello");
    let after = io.omap_get_all(&oid, "").await.expect("omap");
    assert_eq!(after.keys().collect::<Vec<_>>(), ["after"]);
    let absent = lab::unique("rados-ffi-absent");
    let mut op = WriteOp::new();
    op.assert_exists().write_full(b"never");
    let err = io.operate(&absent, op).await.expect_err("assert_exists on a missing object");
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains(&absent), "the error names the object: {err}");
    assert!(io.stat(&absent).await.is_err(), "a failed op writes nothing");

    assert!(io.list_objects().await.expect("list").contains(&oid));
    io.remove(&oid).await.expect("remove");
    let err = io.stat(&oid).await.expect_err("stat after remove");
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains(&oid), "{err}");
}

/// A read into librados' own buffer, sent on by a write without a copy; copied pieces of one
/// write are joined; a bad range fails the op, not the process.
#[tokio::test(flavor = "multi_thread")]
async fn object_buffers_are_read_and_written_on_without_copies() {
    let site = lab::site("site-a");
    let io = mirror_pool(&site).await;
    let src = lab::unique("rados-ffi-buf-src");
    let dst = lab::unique("rados-ffi-buf-dst");
    let data: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    io.write_full(&src, &data).await.expect("write_full");

    let buffer = io.read_buffer(&src, 4096, 8 << 20).await.expect("read_buffer");
    assert_eq!(buffer.len(), data.len() - 4096, "short read: the object ends");
    assert_eq!(buffer.as_slice(), &data[4096..]);
    let absent = io.read_buffer(&lab::unique("rados-ffi-buf-absent"), 0, 10).await.expect_err("absent");
    assert!(absent.is_not_found(), "{absent}");

    let mut op = WriteOp::new();
    op.create(false)
        .write_buffer(0, &buffer, 0..100)
        .write_buffer(1 << 20, &buffer, 5000..(1 << 20) + 5000)
        .write_bytes(100, &[Bytes::from_static(b"ab"), Bytes::new(), Bytes::from_static(b"cde")]);
    drop(buffer);
    io.operate(&dst, op).await.expect("operate");
    let back = io.read_full(&dst).await.expect("read back");
    assert_eq!(back.len(), 2 << 20);
    assert_eq!(&back[..100], &data[4096..4196]);
    assert_eq!(&back[100..105], b"abcde");
    assert!(back[105..1 << 20].iter().all(|b| *b == 0));
    assert_eq!(&back[1 << 20..], &data[4096 + 5000..4096 + 5000 + (1 << 20)]);

    // Slices of a shared read are sent on from librados' buffer; other bytes are copied.
    let shared = io.read_shared(&src, 0, 1 << 20).await.expect("read_shared");
    let (a, b) = (shared.slice(10..20), shared.slice(4096..8192));
    let other = Bytes::from_static(b"xyz");
    assert!(rados_ffi::is_shared(&a) && rados_ffi::is_shared(&b) && !rados_ffi::is_shared(&other));
    drop(shared);
    assert!(rados_ffi::is_shared(&a), "a slice keeps its buffer");
    let mut op = WriteOp::new();
    op.write_bytes(200, &[a.clone(), other, b.clone()]);
    io.operate(&dst, op).await.expect("operate write_bytes");
    let back = io.read(&dst, 200, 10 + 3 + 4096).await.expect("read back");
    assert_eq!(&back[..10], &data[10..20]);
    assert_eq!(&back[10..13], b"xyz");
    assert_eq!(&back[13..], &data[4096..8192]);
    drop((a, b));

    let small = io.read_buffer(&src, 0, 10).await.expect("read_buffer");
    let mut op = WriteOp::new();
    op.write_buffer(0, &small, 5..11);
    let err = io.operate(&dst, op).await.expect_err("range outside the buffer");
    assert!(err.to_string().contains("EINVAL") || err.to_string().contains("22"), "{err}");

    io.remove(&src).await.expect("remove");
    io.remove(&dst).await.expect("remove");
}

/// `cls_rbd`'s `set_id` / `get_id` on an `rbd_id.<name>` object: an encoded string in, the
/// same string out (exactly what librbd does when it creates an image).
#[tokio::test(flavor = "multi_thread")]
async fn cls_methods_execute_on_the_osd() {
    let site = lab::site("site-a");
    let io = mirror_pool(&site).await;
    let oid = format!("rbd_id.{}", lab::unique("rados-ffi-cls"));
    let id = b"abc123def";
    let mut input = (id.len() as u32).to_le_bytes().to_vec();
    input.extend_from_slice(id);

    // cls_rbd refuses set_id on a missing object: create it in the same op, as librbd does.
    let err = io.exec_write(&oid, "rbd", "set_id", &input).await.expect_err("set_id without the object");
    assert!(err.is_not_found(), "{err}");
    let mut op = WriteOp::new();
    op.create(true).exec("rbd", "set_id", &input).expect("op exec");
    io.operate(&oid, op).await.expect("create + rbd.set_id");
    let out = io.exec(&oid, "rbd", "get_id", &[]).await.expect("rbd.get_id");
    assert_eq!(&out[..], &input[..], "get_id returns the encoded id set_id stored");

    let err = io.exec(&oid, "rbd", "no_such_method", &[]).await.expect_err("unknown cls method");
    assert_eq!(err.errno(), Some(libc::EOPNOTSUPP), "{err}");
    assert!(err.to_string().contains(&oid), "the error names the object: {err}");
    io.remove(&oid).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_delivers_notifications_and_notify_collects_acks() {
    let site = lab::site("site-b");
    let io = mirror_pool(&site).await;
    let oid = lab::unique("rados-ffi-watch");
    io.write_full(&oid, b"").await.expect("create");

    let mut watch = io.watch(&oid).await.expect("watch");
    watch.check().expect("watch is healthy");
    let watchers = site.rados(&["-p", lab::POOL, "listwatchers", &oid]);
    assert_eq!(watchers.lines().count(), 1, "the OSD sees one watcher: {watchers}");

    for payload in [&b"first"[..], b"second"] {
        let reply = io.notify(&oid, payload, Duration::from_secs(10)).await.expect("notify");
        assert_eq!((reply.acks.len(), reply.timeouts.len()), (1, 0), "{reply:?}");
        let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("a notification within 10 s")
            .expect("watch stream open");
        match event {
            WatchEvent::Notify { payload: got, .. } => assert_eq!(&got[..], payload),
            other => panic!("expected a notification, got {other:?}"),
        }
    }
    watch.close().await.expect("unwatch");
    let reply = io.notify(&oid, b"nobody", Duration::from_secs(5)).await.expect("notify");
    assert_eq!(reply.acks.len(), 0, "no watcher after close: {reply:?}");
    io.remove(&oid).await.expect("remove");
}

/// A well-formed cephx key that belongs to nobody in the lab.
const WRONG_KEY: &str = "AQBUEQlrAAAAABAAwTCV1/uNxnNPjaVaj2xZ2w==";

#[tokio::test(flavor = "multi_thread")]
async fn wrong_key_is_an_authentication_error() {
    let site = lab::site("site-a");
    for client in ["admin", "nobody"] {
        let mut cfg = ClusterConfig::peer(site.name, client, &site.mon_host(), WRONG_KEY);
        cfg.connect_timeout = Duration::from_secs(20);
        let err = Rados::connect(&cfg).await.expect_err("connecting with a wrong key");
        println!("client.{client} with a wrong key: {err}");
        assert!(matches!(err, RadosError::Authentication { .. }), "{err:?}");
        assert!(err.to_string().contains("authentication failed"), "{err}");
        assert!(err.to_string().contains(&format!("client.{client}")), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_monitor_fails_within_the_connect_timeout() {
    // Port 1 on loopback: nothing listens there.
    let timeout = Duration::from_secs(3);
    let mut cfg = ClusterConfig::peer("nowhere", "admin", "v2:127.0.0.1:1", WRONG_KEY);
    cfg.connect_timeout = timeout;
    let start = Instant::now();
    let err = Rados::connect(&cfg).await.expect_err("connecting to a dead monitor");
    let took = start.elapsed();
    println!("unreachable monitor after {took:?}: {err}");
    assert!(matches!(err, RadosError::ConnectTimeout { .. }), "{err:?}");
    assert!(err.to_string().contains("127.0.0.1:1"), "the error names the monitors: {err}");
    // Bounded by the configured timeout (plus librados' own tick), not by a default minutes long.
    assert!(took < timeout + Duration::from_secs(15), "took {took:?}");
}

/// Reads dropped while in flight, then their ioctx dropped: the ioctx must outlive the reads
/// (librados writes into it when they complete), so the process survives and a new ioctx of
/// the same cluster still reads the object whole. Repeated, as the window is small.
#[tokio::test(flavor = "multi_thread")]
async fn dropped_reads_do_not_outlive_their_ioctx() {
    let site = lab::site("site-a");
    let rados = connect(&site).await;
    let oid = lab::unique("rados-ffi-dropped-read");
    let data: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    let io = rados.ioctx(lab::POOL, "").await.expect("opening pool mirror");
    io.write_full(&oid, &data).await.expect("write_full");
    for round in 0..20 {
        let io = rados.ioctx(lab::POOL, "").await.expect("opening pool mirror");
        let mut buf = Vec::new();
        // Submits every piece, then is dropped at its first await.
        let read = io.read_into(&oid, 0, data.len(), 64 << 10, &mut buf);
        let dropped = tokio::time::timeout(Duration::from_micros(1), read).await;
        println!("round {round}: read finished before the drop: {}", dropped.is_ok());
        drop(io);
    }
    let io = rados.ioctx(lab::POOL, "").await.expect("opening pool mirror");
    let back = io.read_full(&oid).await.expect("read_full after the dropped reads");
    assert!(back[..] == data[..], "the object reads back whole");
    io.remove(&oid).await.expect("remove");
}
