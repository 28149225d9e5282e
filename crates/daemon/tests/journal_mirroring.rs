//! Journal-mode mirroring end to end on the lab: `rbd-mirror-rs` started at site-b exactly
//! as the stock daemon is (`tests/lab/lab.sh mirror-start site-b` with our binary) replicates
//! a journaling image of site-a, and the stock `rbd` CLI on both sites agrees.

#[path = "../../../tests/support/lab.rs"]
mod lab;
#[path = "support/mirror.rs"]
mod mirror;

use std::time::Duration;

use mirror::{
    blocklist, daemon_log, daemon_log_since, enable_journal_mirroring as enable, enable_snapshot_mirroring,
    image_id, image_name, image_status, journaling_image, kill_9_daemon, mirror_snapshot,
    mirrored_journal_image as mirrored_image, newest_journal_entry, object_read, object_write, resync,
    signal_daemon, sites, wait_image_status, wait_new_image_id, wait_replicated, wait_same_content,
    wait_status, wait_synced, Daemon, Images, Stock,
};

/// Every feature journal replay maintains.
const ALL_FEATURES: &str = "layering,exclusive-lock,object-map,fast-diff,journaling";

#[test]
fn journal_image_replicates_with_stock_tools_agreeing() {
    let (_serial, a, b) = sites();
    // Data written before mirroring is enabled arrives by the initial sync.
    let (spec, _images) = journaling_image(&a, "journal", "64M", ALL_FEATURES);
    let name = image_name(&spec).to_owned();
    let renamed = format!("{spec}-renamed");
    let _renamed = Images(vec![renamed.clone()]);
    a.bench(&spec, "rand", "4K", "2M");
    enable(&a, &spec);

    let _daemon = Daemon::start();
    let (state, description) =
        wait_image_status(&b, &spec, "the image to replay on site-b", Duration::from_secs(180), |s, _| {
            s == "up+replaying"
        });
    println!("site-b: {state}, {description}");

    // Replay: random 4K writes, sequential 4M writes, a resize, image-meta.
    a.bench(&spec, "rand", "4K", "4M");
    a.bench(&spec, "seq", "4M", "16M");
    a.rbd(&["resize", "--size", "96M", &spec]);
    a.bench(&spec, "rand", "64K", "4M");
    a.rbd(&["image-meta", "set", &spec, "rbd-mirror-rs.test", "value"]);
    // Snapshots: created between writes (so later writes copy-on-write), protected, renamed,
    // unprotected; another created and removed.
    let snap = |name: &str| format!("{spec}@{name}");
    a.rbd(&["snap", "create", &snap("s1")]);
    a.bench(&spec, "rand", "4K", "1M");
    a.rbd(&["snap", "protect", &snap("s1")]);
    a.rbd(&["snap", "rename", &snap("s1"), &snap("s1-renamed")]);
    a.rbd(&["snap", "unprotect", &snap("s1-renamed")]);
    a.rbd(&["snap", "create", &snap("s2")]);
    a.bench(&spec, "rand", "4K", "1M");
    a.rbd(&["snap", "rm", &snap("s2")]);
    a.rbd(&["snap", "rollback", "--no-progress", &snap("s1-renamed")]);
    a.bench(&spec, "rand", "4K", "512K");

    let primary = a.export_sha256(&spec);
    let secondary = lab::wait_for("equal content on both sites", Duration::from_secs(180), || {
        let (state, description) = image_status(&b, &spec)?;
        assert!(!state.ends_with("error"), "replay failed: {state}: {description}");
        let s = b.export_sha256(&spec);
        if s == primary {
            Ok(s)
        } else {
            Err(format!("site-a {primary}, site-b {s}"))
        }
    });
    println!("rbd export | sha256sum: site-a {primary} = site-b {secondary}");

    let (ia, ib) = (a.rbd_json(&["info", &spec]), b.rbd_json(&["info", &spec]));
    for field in ["size", "order", "features", "object_size"] {
        assert_eq!(ia[field], ib[field], "{field}: site-a {} site-b {}", ia[field], ib[field]);
    }
    assert_eq!(ia["mirroring"]["global_id"], ib["mirroring"]["global_id"]);
    assert_eq!(ia["mirroring"]["primary"], true);
    assert_eq!(ib["mirroring"]["primary"], false, "site-b holds the non-primary copy: {ib}");
    let snaps = |site: &lab::Site| -> Vec<(String, u64, String)> {
        let v = site.rbd_json(&["snap", "ls", &spec]);
        v.as_array()
            .expect("snap list")
            .iter()
            .map(|s| {
                let name = s["name"].as_str().unwrap_or_default().to_owned();
                (name, s["size"].as_u64().unwrap_or_default(), s["protected"].to_string())
            })
            .collect()
    };
    let (sa, sb) = (snaps(&a), snaps(&b));
    assert_eq!(sa, sb, "rbd snap ls differs");
    assert_eq!(sa.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(), ["s1-renamed"]);
    let at_snap = format!("{spec}@s1-renamed");
    assert_eq!(a.export_sha256(&at_snap), b.export_sha256(&at_snap), "the snapshot's content");
    let meta = b.rbd(&["image-meta", "get", &spec, "rbd-mirror-rs.test"]);
    assert_eq!(meta.trim(), "value");
    // The object map is consistent: `rbd diff --whole-object` (which reads it, fast-diff
    // enabled) reports the same objects on both sites. Byte-level extents may differ in
    // sparseness after a rollback while the content is equal. (`rbd object-map check` needs
    // the exclusive lock, which librbd refuses on a non-primary image.)
    let (da, db) =
        (a.rbd_json(&["diff", "--whole-object", &spec]), b.rbd_json(&["diff", "--whole-object", &spec]));
    assert_eq!(da, db, "rbd diff differs between the sites");
    assert!(!da.as_array().map(Vec::is_empty).unwrap_or(true), "the image has data");

    let (state, description) =
        wait_image_status(&b, &spec, "caught up in the status", Duration::from_secs(60), |s, d| {
            s == "up+replaying" && d.contains("\"entries_behind_primary\":0")
        });
    println!("site-b: {state}, {description}");
    let pool = b.rbd(&["mirror", "pool", "status", lab::POOL, "--verbose"]);
    assert!(pool.contains(&name), "{pool}");

    // A rename on the primary renames the secondary.
    a.rbd(&["rename", &spec, &renamed]);
    a.bench(&renamed, "rand", "4K", "256K");
    wait_same_content(&a, &b, &renamed);
    assert_eq!(b.rbd_json(&["info", &renamed])["mirroring"]["global_id"], ia["mirroring"]["global_id"]);
    assert!(!b.rbd_ok(&["info", &spec]), "the old name is gone on site-b");

    // Feature changes: the object map off, then on again.
    a.rbd(&["feature", "disable", &renamed, "fast-diff", "object-map"]);
    a.bench(&renamed, "rand", "4K", "256K");
    wait_same_content(&a, &b, &renamed);
    a.rbd(&["feature", "enable", &renamed, "object-map", "fast-diff"]);
    a.bench(&renamed, "rand", "4K", "256K");
    wait_same_content(&a, &b, &renamed);
    lab::wait_for("equal features", Duration::from_secs(60), || {
        let (fa, fb) = (
            a.rbd_json(&["info", &renamed])["features"].clone(),
            b.rbd_json(&["info", &renamed])["features"].clone(),
        );
        if fa == fb {
            Ok(())
        } else {
            Err(format!("site-a {fa}, site-b {fb}"))
        }
    });

    // Stopped: the status goes down (the daemon's watch on rbd_mirroring is gone).
    drop(_daemon);
    wait_image_status(&b, &renamed, "down after the daemon stops", Duration::from_secs(60), |s, _| {
        s.starts_with("down+")
    });
}

fn wait_replaying(b: &lab::Site, spec: &str) {
    wait_status(b, spec, "up+replaying", "");
}

/// Flips one payload byte of the newest write entry in the primary's journal of `spec`;
/// returns the data object and the entry's offset.
fn corrupt_newest_entry(a: &lab::Site, spec: &str) -> (String, usize) {
    let newest = newest_journal_entry(a, spec);
    let at = (newest.offset + 29 + 40) as u64;
    let byte = object_read(a, &newest.object, at, 1);
    object_write(a, &newest.object, at, &[byte[0] ^ 0xff]);
    (newest.object, newest.offset)
}

/// A journal entry with a bad CRC stops that image with a clear error; another image of the
/// same pool keeps replaying.
#[test]
fn a_corrupt_entry_stops_only_its_image() {
    let (_serial, a, b) = sites();
    let (victim, _victim) = mirrored_image(&a, "crc-victim");
    let (healthy, _healthy) = mirrored_image(&a, "crc-healthy");
    let daemon = Daemon::start();
    wait_replaying(&b, &victim);
    wait_replaying(&b, &healthy);
    drop(daemon);

    a.bench(&victim, "seq", "4K", "64K");
    let (object, offset) = corrupt_newest_entry(&a, &victim);
    println!("corrupted the entry at {object} offset {offset}");

    let _daemon = Daemon::start();
    let (_, description) =
        wait_image_status(&b, &victim, "the victim in error", Duration::from_secs(120), |s, _| {
            s == "up+error"
        });
    println!("site-b {victim}: up+error, {description}");
    assert!(description.contains("CRC mismatch") && description.contains(&object), "{description}");
    assert!(description.contains(&format!("offset {offset}")), "{description}");

    // The other image is unaffected.
    a.bench(&healthy, "rand", "4K", "1M");
    wait_same_content(&a, &b, &healthy);
    assert_eq!(image_status(&b, &healthy).expect("status").0, "up+replaying");
}

/// `kill -9` in the middle of a backlog: the restarted daemon resumes from the committed
/// position (no new initial sync) and the images converge.
#[test]
fn kill_9_during_replay_resumes_from_the_committed_position() {
    let (_serial, a, b) = sites();
    let (spec, _images) = mirrored_image(&a, "kill9");
    let daemon = Daemon::start();
    wait_replaying(&b, &spec);
    drop(daemon);

    // A 256 MiB backlog of 4K random writes while no daemon runs.
    a.bench(&spec, "rand", "4K", "256M");
    let name = image_name(&spec);
    let client = b.rados(&["-p", lab::POOL, "getomapval", "rbd_mirroring", "mirror_uuid", "/dev/stdout"]);
    let client = client.trim().to_owned();
    let position = || -> String {
        let status = a.rbd(&["journal", "status", "--pool", lab::POOL, "--image", name]);
        status.lines().find(|l| l.contains(&format!("[id={client},"))).unwrap_or_default().to_owned()
    };
    let before = position();

    let _daemon = Daemon::start();
    let moved = lab::wait_for("a commit during replay", Duration::from_secs(120), || {
        let now = position();
        if now != before {
            Ok(now)
        } else {
            Err(now)
        }
    });
    let pid = kill_9_daemon();
    println!("killed {pid} after the commit {moved}");
    std::thread::sleep(Duration::from_secs(1));
    let committed = position();
    let log_before = daemon_log().len();

    let _daemon = Daemon::start();
    wait_same_content(&a, &b, &spec);
    let restarted = daemon_log_since(log_before);
    assert!(restarted.contains("replaying from the committed position"), "{restarted}");
    assert!(!restarted.contains("initial sync complete"), "no full resync after kill -9: {restarted}");
    // The same, as an operator's monitoring sees it.
    let label = format!("image=\"{name}\"");
    let resumed = b.metric("rbd_mirror_rs_image_replay_resumed", &label);
    let syncs = b.metric("rbd_mirror_rs_image_full_syncs", &label).unwrap_or(0.0);
    let replayed = b.metric("ceph_rbd_mirror_image_replay", &label).unwrap_or(0.0);
    println!("metrics after the restart: replay_resumed {resumed:?}, full_syncs {syncs}, replay {replayed}");
    assert_eq!(resumed, Some(1.0), "the restart resumed replay from the committed position");
    assert_eq!(syncs, 0.0, "no full sync after kill -9");
    assert!(replayed > 0.0, "entries were replayed after the restart");
    println!("resumed from {committed}");
}

/// The daemon stops answering for longer than its watch timeout (30 s, `SIGSTOP`), so
/// site-a's OSD drops its watch on the primary's journal header (as after a long network
/// partition). Running again, the daemon watches the header again, as the `journal::`
/// library does after a watch error, and replay goes on.
#[test]
fn a_lost_journal_header_watch_is_watched_again() {
    let (_serial, a, b) = sites();
    let (spec, _images) = mirrored_image(&a, "rewatch");
    let _daemon = Daemon::start();
    wait_replaying(&b, &spec);
    let image_id = a.rbd_json(&["info", &spec])["id"].as_str().expect("image id").to_owned();
    let header = format!("journal.{image_id}");
    // Waits until `rados listwatchers` of the header shows a watcher (`present`) or none,
    // and no longer shows `gone` (a cookie).
    let watchers = |present: bool, gone: &str, what: &str| {
        lab::wait_for(what, Duration::from_secs(120), || {
            let w = a.rados(&["-p", lab::POOL, "listwatchers", &header]);
            if w.contains("watcher=") == present && (gone.is_empty() || !w.contains(gone)) {
                Ok(w)
            } else {
                Err(w)
            }
        })
    };
    let before = watchers(true, "", "our watch on the journal header");
    let cookie = before.split_whitespace().find(|f| f.starts_with("cookie=")).expect("a cookie").to_owned();
    println!("before: {before}");
    let log_before = daemon_log().len();
    let pid = signal_daemon("-STOP");
    let dropped =
        std::panic::catch_unwind(|| watchers(false, "", "site-a's OSD dropping the stopped daemon's watch"));
    signal_daemon("-CONT");
    assert!(dropped.is_ok(), "the watch of the stopped daemon {pid} was never dropped");
    // Watched again: either librados reports the watch lost and the daemon watches anew (a
    // new cookie, logged), or librados itself re-establishes the same watch when it
    // reconnects (the same cookie: which one happens depends on timing). Replay goes on.
    let after = watchers(true, "", "the journal header watched again");
    println!("after: {after}");
    if after.contains(&cookie) {
        println!("librados re-established the same watch ({cookie})");
    } else {
        // The OSD lists the new watch as soon as it registers it, a moment before the
        // daemon's watch call returns and logs it.
        lab::wait_for("the new watch in the daemon's log", Duration::from_secs(30), || {
            let log = daemon_log_since(log_before);
            if log.contains("journal header watched again") {
                Ok(())
            } else {
                Err(format!("a new watch, not logged: {log}"))
            }
        });
    }
    a.bench(&spec, "rand", "4K", "4M");
    wait_same_content(&a, &b, &spec);
}

/// Steady state of an rx-tx setup: the stock daemon at site-a has registered its journal
/// client on site-b's copy of `spec` (it keeps site-b's tags from expiring, which its
/// split-brain check needs after a failover).
fn wait_site_a_client_on_site_b(a: &lab::Site, b: &lab::Site, spec: &str) {
    let site_a_uuid =
        a.rados(&["-p", lab::POOL, "getomapval", "rbd_mirroring", "mirror_uuid", "/dev/stdout"]);
    let client = format!("[id={},", site_a_uuid.trim());
    let name = image_name(spec);
    lab::wait_for("site-a's client on site-b's journal", Duration::from_secs(120), || {
        let status = b.rbd(&["journal", "status", "--pool", lab::POOL, "--image", name]);
        if status.contains(&client) {
            Ok(())
        } else {
            Err(status)
        }
    });
}

/// Orderly failover with the stock daemon at the other site: ours replicates site-a to
/// site-b; site-a is demoted and site-b promoted (no force); writes on site-b then reach
/// site-a through the STOCK daemon, which accepts the tag chain our replay wrote. Then the
/// failback: site-b demoted, site-a promoted, and our replay links its local demotion to the
/// primary's promotion (stock's split-brain rule: no split brain) and replicates again.
#[test]
fn failover_to_site_b_then_stock_replicates_back_then_failback() {
    let (_serial, a, b) = sites();
    // rx-tx peering runs a daemon at each site, as an operator would.
    let _stock = Stock::start("site-a");
    let _ours = Daemon::start();
    let (spec, _images) = journaling_image(&a, "failover", "64M", ALL_FEATURES);
    enable(&a, &spec);
    a.bench(&spec, "rand", "4K", "1M");
    wait_replaying(&b, &spec);
    wait_same_content(&a, &b, &spec);

    wait_site_a_client_on_site_b(&a, &b, &spec);

    a.rbd(&["mirror", "image", "demote", &spec]);
    wait_status(&b, &spec, "up+unknown", "remote image is non-primary");
    b.rbd(&["mirror", "image", "promote", &spec]);
    assert_eq!(b.rbd_json(&["info", &spec])["mirroring"]["primary"], true);
    wait_status(&b, &spec, "up+stopped", "local image is primary");
    // Promoted, the image takes the exclusive lock, so librbd can now check the object map
    // that our replay maintained through librados: a mismatch would flag it invalid.
    let check = b.command_output("rbd", &["object-map", "check", &spec]);
    let info = b.rbd_json(&["info", &spec]);
    println!("rbd object-map check {spec}: {check:?}; flags {}", info["flags"]);
    assert!(check.is_ok(), "rbd object-map check: {check:?}");
    assert_eq!(info["flags"], serde_json::json!([]), "object map after replay");

    b.bench(&spec, "rand", "4K", "2M");
    let primary = b.export_sha256(&spec);
    lab::wait_for("site-b's writes on site-a (stock daemon)", Duration::from_secs(180), || {
        let s = a.export_sha256(&spec);
        if s == primary {
            Ok(())
        } else {
            Err(format!("site-b {primary}, site-a {s}; site-a status {:?}", image_status(&a, &spec)))
        }
    });
    println!("failback path: site-a {:?}", image_status(&a, &spec));

    // Failback: site-b demoted, site-a promoted once the stock daemon replayed the demotion.
    // Our replay at site-b links its demotion to site-a's promotion (no split brain) and
    // carries on.
    b.rbd(&["mirror", "image", "demote", &spec]);
    // (the stock daemon says "remote image is not primary")
    wait_status(&a, &spec, "up+unknown", "");
    a.rbd(&["mirror", "image", "promote", &spec]);
    a.bench(&spec, "rand", "4K", "512K");
    wait_replaying(&b, &spec);
    wait_same_content(&a, &b, &spec);
    println!("failed back: site-b {:?}", image_status(&b, &spec));
}

/// The switch of docs/operations.md, both ways: an image bootstrapped and replayed by the
/// STOCK daemon at site-b is taken over by ours from the stock daemon's commit position,
/// then by the stock daemon again from ours; no new image sync either way (the stock
/// daemon's debug log shows its bootstrap and no `ImageSync`), the site-b image never
/// recreated, and what was written while no daemon ran replicated each time.
#[test]
fn switching_from_the_stock_daemon_to_ours_and_back_needs_no_resync() {
    let (_serial, a, b) = sites();
    let (spec, _images) = mirrored_image(&a, "takeover");
    a.bench(&spec, "rand", "4K", "1M");
    {
        let _stock = Stock::start("site-b");
        wait_replaying(&b, &spec);
        wait_same_content(&a, &b, &spec);
    }
    let local_id = image_id(&b, &spec);
    a.bench(&spec, "rand", "4K", "2M");
    let log_before = daemon_log().len();
    {
        let _ours = Daemon::start();
        wait_same_content(&a, &b, &spec);
        wait_replaying(&b, &spec);
    }
    let ours = daemon_log_since(log_before);
    let name = image_name(&spec);
    assert!(ours.contains("replaying from the committed position"), "{ours}");
    assert!(
        !ours.lines().any(|l| l.contains("initial sync complete") && l.contains(name)),
        "no resync of a stock-bootstrapped image: {ours}"
    );

    // And back: the stock daemon continues from our commit position.
    a.bench(&spec, "rand", "4K", "2M");
    let log_before = daemon_log().len();
    {
        let _stock = Stock::start_with("site-b", &["--debug-rbd-mirror", "10"]);
        wait_same_content(&a, &b, &spec);
        wait_replaying(&b, &spec);
    }
    let stock = daemon_log_since(log_before);
    assert!(
        stock.contains("rbd::mirror::image_replayer::BootstrapRequest"),
        "the stock daemon's debug log: {stock}"
    );
    assert!(!stock.contains("rbd::mirror::ImageSync"), "the stock daemon synced the image again: {stock}");
    assert_eq!(image_id(&b, &spec), local_id, "the site-b image was recreated");
}

/// `rbd mirror image resync` on the secondary: the local image is deleted and copied again
/// (a new image id), then replay continues.
#[test]
fn resync_recreates_the_secondary() {
    let (_serial, a, b) = sites();
    let (spec, _images) = mirrored_image(&a, "resync");
    a.bench(&spec, "rand", "4K", "1M");
    let _ours = Daemon::start();
    wait_replaying(&b, &spec);
    wait_same_content(&a, &b, &spec);

    resync(&b, &spec);
    a.bench(&spec, "rand", "4K", "512K");
    wait_replaying(&b, &spec);
    wait_same_content(&a, &b, &spec);
}

/// What the rbd CLI cannot issue, issued through librbd on site-a: discards (whole object,
/// object tail, inside an object), write-zeroes, write-same, compare-and-write, and a shrink.
#[test]
fn discard_write_same_compare_and_write_and_shrink_replicate() {
    let (_serial, a, b) = sites();
    let (spec, _images) = journaling_image(&a, "io", "16M", ALL_FEATURES);
    enable(&a, &spec);
    let _ours = Daemon::start();
    wait_replaying(&b, &spec);

    const M: u64 = 1 << 20;
    let n = |v: u64| v.to_string();
    a.rbdio(&spec, &["write", "0", &n(12 * M), "7"]);
    a.rbdio(&spec, &["discard", &n(4 * M), &n(4 * M)]); // the whole of object 1
    a.rbdio(&spec, &["discard", &n(10 * M), &n(2 * M)]); // the tail of object 2
    a.rbdio(&spec, &["write-zeroes", &n(M), &n(64 << 10)]);
    a.rbdio(&spec, &["write-same", &n(2 * M), &n(64 << 10)]);
    a.rbdio(&spec, &["compare-and-write", &n(2 * M)]);
    a.rbdio(&spec, &["resize", &n(10 * M)]);
    wait_same_content(&a, &b, &spec);
    let (ia, ib) = (a.rbd_json(&["info", &spec]), b.rbd_json(&["info", &spec]));
    assert_eq!(ia["size"], ib["size"]);
    assert_eq!(ia["size"], 10 * M);
    assert_eq!(
        a.rbd_json(&["diff", "--whole-object", &spec]),
        b.rbd_json(&["diff", "--whole-object", &spec]),
        "rbd diff (object map) differs"
    );
}

/// `rbd snap ls` of `spec` as (name, size, protected) triples, in snapshot-id order.
fn user_snapshots(site: &lab::Site, spec: &str) -> Vec<(String, u64, String)> {
    let v = site.rbd_json(&["snap", "ls", spec]);
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["name"].as_str().unwrap_or_default().to_owned(),
                        s["size"].as_u64().unwrap_or_default(),
                        s["protected"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Snapshots that exist on the primary before mirroring is enabled are recreated on the
/// secondary by the initial sync (same names, sizes, protection, content at each snapshot),
/// as the stock daemon's image sync does.
#[test]
fn existing_snapshots_are_synced_at_bootstrap() {
    let (_serial, a, b) = sites();
    let (spec, _images) = journaling_image(&a, "snaps", "16M", ALL_FEATURES);
    const M: u64 = 1 << 20;
    let n = |v: u64| v.to_string();
    a.rbdio(&spec, &["write", "0", &n(6 * M), "1"]);
    a.rbd(&["snap", "create", &format!("{spec}@one")]);
    a.rbd(&["snap", "protect", &format!("{spec}@one")]);
    a.rbdio(&spec, &["write", &n(2 * M), &n(M), "2"]);
    a.rbdio(&spec, &["discard", &n(4 * M), &n(4 * M)]);
    a.rbdio(&spec, &["resize", &n(24 * M)]);
    a.rbdio(&spec, &["write", &n(20 * M), &n(M), "3"]);
    a.rbd(&["snap", "create", &format!("{spec}@two")]);
    a.bench(&spec, "rand", "4K", "512K");
    a.rbd(&["snap", "create", &format!("{spec}@three")]);
    a.rbd(&["snap", "protect", &format!("{spec}@three")]);
    a.rbdio(&spec, &["write", &n(M), &n(M), "4"]);
    enable(&a, &spec);

    let _ours = Daemon::start();
    wait_replaying(&b, &spec);
    wait_same_content(&a, &b, &spec);
    let snaps = user_snapshots(&a, &spec);
    assert_eq!(snaps.len(), 3, "{snaps:?}");
    lab::wait_for("the same snapshots on both sites", Duration::from_secs(60), || {
        let local = user_snapshots(&b, &spec);
        if local == snaps {
            Ok(())
        } else {
            Err(format!("site-a {snaps:?}, site-b {local:?}"))
        }
    });
    for (name, _, _) in &snaps {
        let at = format!("{spec}@{name}");
        assert_eq!(a.export_sha256(&at), b.export_sha256(&at), "content of {at}");
    }
}

/// The peer stops mirroring images (ceph-formats.md §6.4, last bullet): site-b's non-primary
/// copy of a journal-mode image whose mirroring is disabled on site-a, and of a
/// snapshot-mode image removed on site-a, are deleted (through the trash, removed from there
/// at once: no `rbd_mirroring_delete_delay`); an image promoted on site-b after an
/// orderly failover is kept when site-a then disables its mirroring; an image disabled on
/// site-a while no daemon ran is deleted when the daemon starts.
#[test]
fn images_the_peer_stops_mirroring_are_deleted_unless_primary_here() {
    let (_serial, a, b) = sites();
    let spec = |prefix: &str| format!("{}/{}", lab::POOL, lab::unique(prefix));
    let (journal, snapshot, promoted) = (spec("gone-journal"), spec("gone-snapshot"), spec("kept-promoted"));
    let offline = spec("gone-offline");
    let _images = Images(vec![journal.clone(), snapshot.clone(), promoted.clone(), offline.clone()]);
    for s in [&journal, &promoted, &offline] {
        a.rbd(&["create", "--size", "16M", "--image-feature", "layering,exclusive-lock,journaling", s]);
        a.rbd(&["mirror", "image", "enable", s, "journal"]);
    }
    a.rbd(&["create", "--size", "16M", &snapshot]);
    a.bench(&snapshot, "rand", "4K", "512K");
    a.rbd(&["mirror", "image", "enable", &snapshot, "snapshot"]);
    a.bench(&journal, "rand", "4K", "512K");
    a.bench(&promoted, "rand", "4K", "512K");

    let daemon = Daemon::start();
    for s in [&journal, &snapshot, &promoted, &offline] {
        let primary = a.export_sha256(s);
        wait_replicated(&b, s, &primary, Duration::from_secs(180));
        assert_eq!(b.rbd_json(&["info", s])["mirroring"]["primary"], false, "{s}");
    }
    // The state registry, as /metrics shows it: one state series per replayed image.
    let image_label = |s: &str| format!("image=\"{}\"", s.rsplit('/').next().unwrap_or(s));
    let replaying = |s: &str| format!("{},state=\"replaying\"", image_label(s));
    lab::wait_for("the journal image replaying in /metrics", Duration::from_secs(30), || {
        b.metric("rbd_mirror_rs_image_state", &replaying(&journal)).ok_or_else(|| "no series".to_owned())
    });
    assert_eq!(b.metric("rbd_mirror_rs_image_state", &image_label(&journal)), Some(1.0));
    assert!(b.metric("rbd_mirror_rs_image_entries_behind_primary", &image_label(&journal)).is_some());

    // Orderly failover of `promoted`: demoted on site-a, promoted on site-b.
    a.rbd(&["mirror", "image", "demote", &promoted]);
    wait_status(&b, &promoted, "up+unknown", "remote image is non-primary");
    b.rbd(&["mirror", "image", "promote", &promoted]);
    wait_status(&b, &promoted, "up+stopped", "local image is primary");
    let promoted_gid =
        b.rbd_json(&["info", &promoted])["mirroring"]["global_id"].as_str().unwrap_or_default().to_owned();

    // The peer stops mirroring all three.
    let log_before = daemon_log().len();
    a.rbd(&["mirror", "image", "disable", &journal]);
    a.rbd(&["snap", "purge", &snapshot]);
    a.rbd(&["rm", "--no-progress", &snapshot]);
    a.rbd(&["mirror", "image", "disable", "--force", &promoted]);

    let wait_deleted = |s: &str| {
        let error = lab::wait_for(&format!("{s} deleted on site-b"), Duration::from_secs(120), || {
            match b.command_output("rbd", &["info", s]) {
                Ok(info) => Err(format!("still there: {info}")),
                Err(e) => Ok(e),
            }
        });
        println!("site-b: rbd info {s}: {error}");
        assert!(error.contains("No such file or directory"), "{error}");
        assert!(image_status(&b, s).is_err(), "no status entry left for {s}");
    };
    wait_deleted(&journal);
    wait_deleted(&snapshot);
    lab::wait_for("site-b's trash emptied", Duration::from_secs(60), || {
        let trash = b.rbd(&["trash", "ls", "--all", lab::POOL]);
        let names = [&journal, &snapshot].map(|s| mirror::image_name(s).to_owned());
        if names.iter().any(|n| trash.contains(n.as_str())) {
            Err(trash)
        } else {
            Ok(())
        }
    });
    // Their replayers stopped: no series left for them.
    for s in [&journal, &snapshot] {
        assert_eq!(b.metric("rbd_mirror_rs_image_state", &image_label(s)), None, "{s}");
        assert_eq!(b.metric("rbd_mirror_rs_image_entries_behind_primary", &image_label(s)), None, "{s}");
    }
    let log = lab::wait_for("the promoted image kept", Duration::from_secs(60), || {
        let log = daemon_log();
        let since = log.get(log_before..).unwrap_or_default().to_owned();
        if since
            .lines()
            .any(|l| l.contains(&promoted_gid) && l.contains("local image is primary: keeping it"))
        {
            Ok(since)
        } else {
            Err(since)
        }
    });
    let info = b.rbd_json(&["info", &promoted]);
    assert_eq!(info["mirroring"]["primary"], true, "site-b keeps its primary image: {info}");
    let deleted = log.lines().filter(|l| l.contains("moving the local image to the trash")).count();
    println!("daemon: {deleted} local images deleted; {promoted} kept (primary)");
    assert_eq!(deleted, 2, "{log}");

    // Disabled while no daemon runs: found when the daemon starts.
    drop(daemon);
    a.rbd(&["mirror", "image", "disable", &offline]);
    assert!(b.rbd_ok(&["info", &offline]), "site-b keeps {offline} while no daemon runs");
    let _daemon = Daemon::start();
    wait_deleted(&offline);
    assert_eq!(b.rbd_json(&["info", &promoted])["mirroring"]["primary"], true, "{promoted} still kept");
}

/// `rbd trash mv` then `rbd trash restore` of primaries on site-a, as stock handles them:
/// librbd (Pacific) disables the mirroring of an image it moves to the trash, in either
/// mode, so the peer no longer lists it and site-b's copies go to site-b's trash (source
/// `MIRRORING`) and from there; restored, the images are not mirrored (pool mode `image`)
/// until enabled again, and then replicate afresh under their names.
#[test]
fn trash_mv_and_restore_of_the_primary_leave_a_working_mirror() {
    let (_serial, a, b) = sites();
    let (journal, _j) = mirrored_image(&a, "trash-journal");
    let snapshot = format!("{}/{}", lab::POOL, lab::unique("trash-snapshot"));
    let _s = Images(vec![snapshot.clone()]);
    a.rbd(&["create", "--size", "16M", &snapshot]);
    a.bench(&snapshot, "rand", "4K", "256K");
    mirror::enable_snapshot_mirroring(&a, &snapshot);
    a.bench(&journal, "rand", "4K", "256K");
    let _daemon = Daemon::start();
    for s in [&journal, &snapshot] {
        wait_replicated(&b, s, &a.export_sha256(s), Duration::from_secs(120));
    }
    let ids = [image_id(&b, &journal), image_id(&b, &snapshot)];
    let trash_id = |site: &lab::Site, spec: &str| {
        let all = site.rbd_json(&["trash", "ls", "--all", "--long", lab::POOL]);
        all.as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == image_name(spec))
            .map(|e| (e["id"].as_str().unwrap_or_default().to_owned(), e["source"].to_string()))
    };

    let log_before = daemon_log().len();
    for s in [&journal, &snapshot] {
        a.rbd(&["trash", "mv", s]);
    }
    for s in [&journal, &snapshot] {
        lab::wait_for(&format!("site-b's copy of {s} gone"), Duration::from_secs(60), || {
            if b.rbd_ok(&["info", s]) {
                Err("still there".to_owned())
            } else {
                Ok(())
            }
        });
    }
    let log = daemon_log_since(log_before);
    for id in &ids {
        assert!(
            log.lines().any(|l| l.contains("moving the local image to the trash") && l.contains(id.as_str())),
            "{log}"
        );
    }

    // Restored on site-a, enabled again: replicated as new images.
    for s in [&journal, &snapshot] {
        let (id, source) = trash_id(&a, s).unwrap_or_else(|| panic!("{s} in site-a's trash"));
        assert_eq!(source, "\"USER\"", "{s}");
        a.rbd(&["trash", "restore", "--pool", lab::POOL, &id]);
        assert!(!a.rbd(&["info", s]).contains("mirroring state: enabled"), "{s}: restored not mirrored");
    }
    enable(&a, &journal);
    mirror::enable_snapshot_mirroring(&a, &snapshot);
    a.bench(&journal, "rand", "4K", "256K");
    for s in [&journal, &snapshot] {
        wait_replicated(&b, s, &a.export_sha256(s), Duration::from_secs(180));
    }
    for (s, id) in [&journal, &snapshot].into_iter().zip(&ids) {
        assert_ne!(&image_id(&b, s), id, "{s} recreated");
    }
    wait_replaying(&b, &journal);
}

/// Removes a pool-level configuration override of site-b's pool when the test ends.
struct PoolOverride<'a>(&'a lab::Site, &'static str);

impl Drop for PoolOverride<'_> {
    fn drop(&mut self) {
        let _ = self.0.rbd_ok(&["config", "pool", "rm", lab::POOL, self.1]);
    }
}

/// `rbd mirror restart <spec>` through our daemon's admin socket: the image's next attempt
/// reads its configuration again.
fn restart_image(b: &lab::Site, spec: &str) {
    let asok = b.dir.join("run/client.rbd-mirror.b.asok");
    let out = std::process::Command::new("ceph")
        .arg("--admin-daemon")
        .arg(&asok)
        .args(["rbd", "mirror", "restart", spec])
        .output()
        .expect("ceph --admin-daemon");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn replay_delay_from_the_pool_or_the_image_holds_entries_back() {
    let (_serial, a, b) = sites();
    let (spec, _images) = mirrored_image(&a, "delay");
    let _daemon = Daemon::start();
    wait_replaying(&b, &spec);

    // `rbd config pool set` on site-b's pool (as stock reads it: the local image's config).
    let _pool = PoolOverride(&b, "rbd_mirroring_replay_delay");
    b.rbd(&["config", "pool", "set", lab::POOL, "rbd_mirroring_replay_delay", "20"]);
    let from = daemon_log().len();
    restart_image(&b, &spec);
    lab::wait_for("the delay taken", Duration::from_secs(60), || {
        let log = daemon_log_since(from);
        log.lines().find(|l| l.contains("delayed replay") && l.contains("delay_s=20")).map(drop).ok_or(log)
    });
    wait_replaying(&b, &spec);
    let written = std::time::Instant::now();
    a.bench(&spec, "rand", "4K", "256K");
    let primary = a.export_sha256(&spec);
    std::thread::sleep(Duration::from_secs(8));
    assert_ne!(b.export_sha256(&spec), primary, "nothing applied 8 s after the writes");
    wait_replicated(&b, &spec, &primary, Duration::from_secs(90));
    let took = written.elapsed();
    println!("delayed entries applied {took:?} after the writes");
    assert!(took >= Duration::from_secs(15), "applied after {took:?}, before the delay");

    // `rbd config image set` wins over the pool's: no delay for this image. Set on the
    // primary (a non-primary image refuses it), it reaches site-b's image by replay.
    a.rbd(&["config", "image", "set", &spec, "rbd_mirroring_replay_delay", "0"]);
    lab::wait_for("the image's override replicated", Duration::from_secs(90), || {
        let got = b.command_output("rbd", &["config", "image", "get", &spec, "rbd_mirroring_replay_delay"]);
        match got {
            Ok(v) if v.trim() == "0" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    restart_image(&b, &spec);
    wait_replaying(&b, &spec);
    a.bench(&spec, "rand", "4K", "256K");
    let primary = a.export_sha256(&spec);
    let written = std::time::Instant::now();
    wait_replicated(&b, &spec, &primary, Duration::from_secs(60));
    let took = written.elapsed();
    assert!(took < Duration::from_secs(15), "took {took:?}: still delayed");
}

/// The primary disconnects our journal client (`rbd journal client disconnect`, as its
/// laggy-client rule does): the image goes `up+error` "disconnected" and stays there, nothing
/// replayed; `rbd mirror image resync` recovers it, our client registered afresh
/// (connected). With `rbd_mirroring_resync_after_disconnect` on site-b's pool, a second
/// disconnect resyncs by itself.
#[test]
fn a_disconnected_journal_client_stops_replay_until_a_resync() {
    let (_serial, a, b) = sites();
    let (spec, _images) = mirrored_image(&a, "disconnect");
    a.bench(&spec, "rand", "4K", "1M");
    let _daemon = Daemon::start();
    wait_replaying(&b, &spec);
    wait_same_content(&a, &b, &spec);
    let name = image_name(&spec);
    let client = b.rados(&["-p", lab::POOL, "getomapval", "rbd_mirroring", "mirror_uuid", "/dev/stdout"]);
    let client = client.trim().to_owned();
    let our_client = || -> String {
        let status = a.rbd(&["journal", "status", "--pool", lab::POOL, "--image", name]);
        status.lines().find(|l| l.contains(&format!("[id={client},"))).unwrap_or_default().to_owned()
    };
    let disconnect = || {
        a.rbd(&[
            "journal",
            "client",
            "disconnect",
            "--pool",
            lab::POOL,
            "--image",
            name,
            "--client-id",
            &client,
        ]);
        assert!(our_client().contains("state=disconnected"), "{}", our_client());
    };

    disconnect();
    wait_status(&b, &spec, "up+error", "disconnected");
    let held = b.export_sha256(&spec);
    a.bench(&spec, "rand", "4K", "512K");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(b.export_sha256(&spec), held, "nothing replayed while disconnected");
    let (state, description) = image_status(&b, &spec).unwrap_or_default();
    assert_eq!((state.as_str(), description.as_str()), ("up+error", "disconnected"));

    resync(&b, &spec);
    wait_replaying(&b, &spec);
    wait_same_content(&a, &b, &spec);
    assert!(our_client().contains("state=connected"), "registered afresh: {}", our_client());

    // By itself with rbd_mirroring_resync_after_disconnect (the local image's view: pool).
    let _pool = PoolOverride(&b, "rbd_mirroring_resync_after_disconnect");
    b.rbd(&["config", "pool", "set", lab::POOL, "rbd_mirroring_resync_after_disconnect", "true"]);
    let before = image_id(&b, &spec);
    disconnect();
    wait_new_image_id(&b, &spec, &before);
    a.bench(&spec, "rand", "4K", "256K");
    wait_replaying(&b, &spec);
    wait_same_content(&a, &b, &spec);
    assert!(our_client().contains("state=connected"), "{}", our_client());
}

/// Split brain in journal mode: site-b force-promoted while no daemon runs, written to, then
/// demoted, while site-a went on writing. Our daemon finds the local epoch unlinked from
/// the primary's tag chain: `up+error` "split-brain detected", nothing written; `rbd mirror
/// image resync` recovers.
#[test]
fn a_split_brain_is_detected_and_a_resync_recovers_it() {
    let (_serial, a, b) = sites();
    let (spec, _images) = mirrored_image(&a, "splitbrain");
    a.bench(&spec, "rand", "4K", "1M");
    {
        let _daemon = Daemon::start();
        wait_replaying(&b, &spec);
        wait_same_content(&a, &b, &spec);
    }
    b.rbd(&["mirror", "image", "promote", "--force", &spec]);
    b.bench(&spec, "rand", "4K", "512K");
    b.rbd(&["mirror", "image", "demote", &spec]);
    a.bench(&spec, "rand", "4K", "512K");
    let held = b.export_sha256(&spec);

    let _daemon = Daemon::start();
    wait_status(&b, &spec, "up+error", "split-brain detected");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(b.export_sha256(&spec), held, "nothing written into a split brain");

    resync(&b, &spec);
    wait_replaying(&b, &spec);
    wait_same_content(&a, &b, &spec);
}

/// `rbd mirror image promote --force` at site-b while our journal replay runs: replay stops
/// (`up+stopped`), and what site-a writes afterwards is not applied to site-b's image.
#[test]
fn a_forced_promotion_here_stops_journal_replay() {
    let (_serial, a, b) = sites();
    let (spec, _images) = mirrored_image(&a, "forcejournal");
    a.bench(&spec, "rand", "4K", "1M");
    let _daemon = Daemon::start();
    wait_replaying(&b, &spec);
    wait_same_content(&a, &b, &spec);

    b.rbd(&["mirror", "image", "promote", "--force", &spec]);
    assert_eq!(b.rbd_json(&["info", &spec])["mirroring"]["primary"], true);
    wait_status(&b, &spec, "up+stopped", "");
    let promoted = b.export_sha256(&spec);
    a.bench(&spec, "rand", "4K", "512K");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(b.export_sha256(&spec), promoted, "site-a's writes are not replayed into a primary");
}

/// No blocklist entries, as with stock: replication with its initial sync, a resync, a clean
/// stop and start of the daemon, and an orderly failover to site-b leave `ceph osd blocklist
/// ls` as it was on both sites.
#[test]
fn sync_resync_restart_and_failover_leave_no_blocklist_entries() {
    let (_serial, a, b) = sites();
    let before = (blocklist(&a), blocklist(&b));
    let (spec, _images) = mirrored_image(&a, "noblocklist");
    a.bench(&spec, "rand", "4K", "1M");
    {
        let _daemon = Daemon::start();
        wait_replaying(&b, &spec);
        wait_same_content(&a, &b, &spec);
        resync(&b, &spec);
        wait_replaying(&b, &spec);
        wait_same_content(&a, &b, &spec);
    }
    let _daemon = Daemon::start();
    a.bench(&spec, "rand", "4K", "256K");
    wait_same_content(&a, &b, &spec);
    a.rbd(&["mirror", "image", "demote", &spec]);
    wait_status(&b, &spec, "up+unknown", "remote image is non-primary");
    b.rbd(&["mirror", "image", "promote", &spec]);
    wait_status(&b, &spec, "up+stopped", "local image is primary");
    b.bench(&spec, "rand", "4K", "256K");
    let after = (blocklist(&a), blocklist(&b));
    assert_eq!(after, before, "blocklist entries (site-a, site-b) before and after");
    println!("blocklists unchanged: site-a {} entries, site-b {} entries", after.0.len(), after.1.len());
}

/// `rbd mirror image resync` requested while no daemon runs: the next start recreates the
/// local image (a new id) and syncs it fully.
#[test]
fn a_resync_requested_while_the_daemon_is_stopped_is_done_at_its_next_start() {
    let (_serial, a, b) = sites();
    let (spec, _images) = mirrored_image(&a, "resyncstopped");
    a.bench(&spec, "rand", "4K", "1M");
    {
        let _daemon = Daemon::start();
        wait_replaying(&b, &spec);
        wait_same_content(&a, &b, &spec);
    }
    let old = image_id(&b, &spec);
    b.rbd(&["mirror", "image", "resync", &spec]);
    a.bench(&spec, "rand", "4K", "512K");
    let from = daemon_log().len();
    let _daemon = Daemon::start();
    let new = wait_new_image_id(&b, &spec, &old);
    wait_replaying(&b, &spec);
    wait_same_content(&a, &b, &spec);
    assert!(daemon_log_since(from).contains("initial sync complete"), "a full sync of {new}");
}

/// A pool created on a site for a test, removed when the test ends (images first).
struct TestPool<'a>(&'a lab::Site, String);

impl<'a> TestPool<'a> {
    /// Creates RBD pool `name` on `site`.
    fn create(site: &'a lab::Site, name: &str) -> TestPool<'a> {
        site.ceph(&["osd", "pool", "create", name, "8", "8"]);
        site.rbd(&["pool", "init", name]);
        TestPool(site, name.to_owned())
    }

    /// The data objects in this pool whose names start with `block_name_prefix` (`rados ls`).
    fn data_objects(&self, block_name_prefix: &str) -> usize {
        let prefix = format!("{block_name_prefix}.");
        self.0.rados(&["-p", &self.1, "ls"]).lines().filter(|l| l.starts_with(&prefix)).count()
    }
}

impl Drop for TestPool<'_> {
    fn drop(&mut self) {
        let _ = self.0.ceph_ok(&["osd", "pool", "rm", &self.1, &self.1, "--yes-i-really-really-mean-it"]);
    }
}

/// Images with a separate data pool (`rbd create --data-pool`), in both modes: created at
/// site-b with the same data pool when site-b has a pool of that name, and their data lands
/// there; when it has none, the data stays in the image's pool (the stock daemon's choice).
/// Snapshots (whose ids come from the data pool) and writes after them replicate too.
#[test]
fn images_with_a_separate_data_pool_replicate_into_that_pool_in_both_modes() {
    let (_serial, a, b) = sites();
    let features = "layering,exclusive-lock,object-map,fast-diff,journaling";
    let data_pool = lab::unique("mirror-data");
    let only_a = lab::unique("mirror-data-a");
    // Dropped last: the images go first.
    let (_pa, pb) = (TestPool::create(&a, &data_pool), TestPool::create(&b, &data_pool));
    let _pa_only = TestPool::create(&a, &only_a);
    let journal = format!("{}/{}", lab::POOL, lab::unique("dp-journal"));
    let snapshot = format!("{}/{}", lab::POOL, lab::unique("dp-snapshot"));
    let elsewhere = format!("{}/{}", lab::POOL, lab::unique("dp-absent"));
    let _images = Images(vec![journal.clone(), snapshot.clone(), elsewhere.clone()]);
    for (spec, pool) in [(&journal, &data_pool), (&snapshot, &data_pool), (&elsewhere, &only_a)] {
        a.rbd(&["create", "--size", "32M", "--data-pool", pool, "--image-feature", features, spec]);
        a.bench(spec, "rand", "4K", "1M");
    }
    enable(&a, &journal);
    enable(&a, &elsewhere);
    enable_snapshot_mirroring(&a, &snapshot);

    let _daemon = Daemon::start();
    for spec in [&journal, &elsewhere] {
        wait_replaying(&b, spec);
    }
    // Replay after the initial sync, across a snapshot (copy-on-write in the data pool).
    for spec in [&journal, &elsewhere] {
        a.bench(spec, "rand", "4K", "512K");
        a.rbd(&["snap", "create", &format!("{spec}@s1")]);
        a.bench(spec, "seq", "4M", "8M");
    }
    wait_same_content(&a, &b, &journal);
    wait_same_content(&a, &b, &elsewhere);
    let at_s1 = format!("{journal}@s1");
    lab::wait_for("the snapshot on site-b", Duration::from_secs(60), || {
        b.rbd_ok(&["info", &at_s1]).then_some(()).ok_or_else(|| "not yet".to_owned())
    });
    assert_eq!(a.export_sha256(&at_s1), b.export_sha256(&at_s1), "the snapshot's content");
    // Snapshot mode: the full sync, then an incremental one.
    a.bench(&snapshot, "rand", "4K", "512K");
    let snap_id = mirror_snapshot(&a, &snapshot);
    wait_synced(&b, &snapshot, snap_id, Duration::from_secs(180));
    wait_same_content(&a, &b, &snapshot);

    for spec in [&journal, &snapshot] {
        let info = b.rbd_json(&["info", spec]);
        assert_eq!(
            info["data_pool"],
            data_pool.as_str(),
            "site-b's copy of {spec} uses the data pool: {info}"
        );
        // `rbd_data.<image pool id>.<image id>` for an image with a data pool.
        let prefix = info["block_name_prefix"].as_str().expect("block_name_prefix");
        let objects = pb.data_objects(prefix);
        assert!(objects > 0, "{prefix}.* objects in {data_pool} at site-b");
        println!("site-b {spec}: data_pool {data_pool}, {objects} {prefix}.* objects there");
    }
    let info = b.rbd_json(&["info", &elsewhere]);
    assert!(
        info.get("data_pool").is_none(),
        "no {only_a} at site-b: the data stays in the image's pool: {info}"
    );
    println!("site-b {elsewhere}: no data pool (site-b has no {only_a})");
}

/// The `rbd_data.` objects of `spec` on `site` (`rados ls` of the image's pool).
fn data_objects(site: &lab::Site, spec: &str) -> usize {
    let info = site.rbd_json(&["info", spec]);
    let prefix = format!("{}.", info["block_name_prefix"].as_str().expect("block_name_prefix"));
    site.rados(&["-p", lab::POOL, "ls"]).lines().filter(|l| l.starts_with(&prefix)).count()
}

/// A journal-mode clone (issue 17), as stock mirrors it: site-b's copy is a clone of the local
/// copy of the parent snapshot (`rbd info` names it), and the initial sync copies only the
/// clone's own objects. Journal replay then copies the parent's data up before changing an
/// object the clone has not written yet (librbd's copy-up on the primary: a 4 KiB write, a
/// write-same, a compare-and-write keep the rest of the parent's object), an object
/// discarded whole inside the overlap stays (empty: the parent's data does not show again),
/// a shrink drops the overlap for good. Interop with the stock daemon at site-a: failed over
/// (site-a demoted, site-b promoted), librbd at site-b agrees with the object map replay kept
/// (`rbd object-map check`) and copies up from site-b's parent, and the STOCK daemon
/// replicates that back into site-a's clone; failed back, ours replicates again. Last, `rbd
/// flatten` on the primary flattens site-b's copy (no parent; the parent snapshot has no
/// children left). Both sites read the same after each step (`rbd export | sha256sum`), and
/// hold the same objects (`rados ls`).
#[test]
fn a_journal_clone_is_a_clone_of_the_local_parent_with_copy_up_failover_and_flatten() {
    let (_serial, a, b) = sites();
    // rx-tx peering, as for a failover: the stock daemon at site-a.
    let _stock = Stock::start("site-a");
    let features = "layering,exclusive-lock,object-map,fast-diff,journaling";
    let parent = format!("{}/{}", lab::POOL, lab::unique("parent"));
    let clone = format!("{}/{}", lab::POOL, lab::unique("clone"));
    let _images = Images(vec![clone.clone(), parent.clone()]);
    let base = format!("{parent}@base");

    // Pattern bytes in all 8 objects of the parent (zeros would not show a missing copy-up).
    a.rbd(&["create", "--size", "32M", "--image-feature", features, &parent]);
    a.rbdio(&parent, &["write", "0", "33554432", "7"]);
    enable(&a, &parent);
    a.rbd(&["snap", "create", &base]);
    a.rbd(&["snap", "protect", &base]);
    a.rbd(&["clone", "--image-feature", features, &base, &clone]);
    // Before mirroring: a 4 KiB write into object 0 (copied up on the primary).
    a.rbdio(&clone, &["write", "4096", "4096", "1"]);
    enable(&a, &clone);

    let _daemon = Daemon::start();
    wait_replicated(&b, &parent, &a.export_sha256(&parent), Duration::from_secs(180));
    wait_replicated(&b, &clone, &a.export_sha256(&clone), Duration::from_secs(180));
    let info = b.rbd_json(&["info", &clone]);
    assert_eq!(info["parent"]["image"], image_name(&parent), "site-b's clone has the local parent: {info}");
    assert_eq!(info["parent"]["snapshot"], "base", "{info}");
    assert_eq!(data_objects(&b, &clone), 1, "the initial sync copied only the clone's own object");

    // Replayed: copy-ups of objects 5, 3 and 6, object 2 discarded whole, object 4 zeroed in
    // part (a copy-up too).
    a.rbdio(&clone, &["write", "20975616", "4096", "2"]);
    a.rbdio(&clone, &["write-same", "12587008", "8192"]);
    a.rbdio(&clone, &["compare-and-write", "25165824"]);
    a.rbdio(&clone, &["discard", "8388608", "4194304"]);
    a.rbdio(&clone, &["write-zeroes", "16781312", "65536"]);
    wait_same_content(&a, &b, &clone);
    let (own_a, own_b) = (data_objects(&a, &clone), data_objects(&b, &clone));
    println!("{clone}: parent {} at site-b; {own_b} own objects of 8 (site-a {own_a})", info["parent"]);
    assert_eq!(own_a, own_b, "site-b's clone holds the objects the primary clone holds");

    // A shrink to 24 MiB and a grow back: object 7 reads zeros, not the parent's data.
    a.rbd(&["resize", "--size", "24M", "--allow-shrink", "--no-progress", &clone]);
    a.rbd(&["resize", "--size", "32M", "--no-progress", &clone]);
    a.rbdio(&clone, &["write", "29360128", "4096", "5"]);
    wait_same_content(&a, &b, &clone);

    // Failover; librbd at site-b copies object 1 up from site-b's parent; the stock daemon
    // replays that into site-a's clone; failback.
    wait_site_a_client_on_site_b(&a, &b, &clone);
    a.rbd(&["mirror", "image", "demote", &clone]);
    wait_status(&b, &clone, "up+unknown", "remote image is non-primary");
    b.rbd(&["mirror", "image", "promote", &clone]);
    let check = b.command_output("rbd", &["object-map", "check", &clone]);
    assert!(check.is_ok(), "rbd object-map check at site-b: {check:?}");
    b.rbdio(&clone, &["write", "4198400", "4096", "3"]);
    let primary = b.export_sha256(&clone);
    lab::wait_for("site-b's clone writes on site-a (stock daemon)", Duration::from_secs(180), || {
        let s = a.export_sha256(&clone);
        if s == primary {
            Ok(())
        } else {
            Err(format!("site-b {primary}, site-a {s}; site-a status {:?}", image_status(&a, &clone)))
        }
    });
    b.rbd(&["mirror", "image", "demote", &clone]);
    wait_status(&a, &clone, "up+unknown", "");
    a.rbd(&["mirror", "image", "promote", &clone]);
    a.rbdio(&clone, &["write", "4202496", "4096", "6"]);
    wait_replaying(&b, &clone);
    wait_same_content(&a, &b, &clone);
    println!("{clone}: failed over, replicated back by the stock daemon, failed back");

    // `rbd flatten` on the primary, replayed: no parent at site-b, the same content, and
    // site-b's parent snapshot has no child left.
    a.rbd(&["flatten", "--no-progress", &clone]);
    lab::wait_for(&format!("{clone} flattened at site-b"), Duration::from_secs(120), || {
        let info = b.rbd_json(&["info", &clone]);
        if info.get("parent").is_none() {
            Ok(())
        } else {
            Err(format!("{info}"))
        }
    });
    wait_same_content(&a, &b, &clone);
    let children = b.rbd(&["children", &base]);
    assert!(children.trim().is_empty(), "site-b's {base} has no child after the flatten: {children}");
    assert_eq!(data_objects(&b, &clone), data_objects(&a, &clone), "flattened: every object its own");
    println!("{clone}: flattened on site-a and at site-b; {} objects", data_objects(&b, &clone));
}

/// Issue 18, journal replay: the primary image's own cap (`rbd image-meta set <image>
/// rbd_mirror_rs_image_bandwidth_limit 2M`, no peer cap) holds within 10 % while a 32 MiB
/// backlog of 64 KiB writes is replayed, measured on `ceph_rbd_mirror_image_replay_bytes`
/// sampled every 100 ms between its first and its last change.
#[test]
fn an_image_bandwidth_cap_holds_during_journal_replay() {
    const CAP: f64 = 2.0 * 1024.0 * 1024.0;
    let (_serial, a, b) = sites();
    let (spec, _images) = mirrored_image(&a, "bwjournal");
    let daemon = Daemon::start();
    wait_replaying(&b, &spec);
    drop(daemon);
    a.rbd(&["image-meta", "set", &spec, "rbd_mirror_rs_image_bandwidth_limit", "2M"]);
    a.bench(&spec, "seq", "64K", "32M");

    let _daemon = Daemon::start();
    let label = format!("image=\"{}\"", image_name(&spec));
    let replayed = || b.metric("ceph_rbd_mirror_image_replay_bytes", &label).unwrap_or(0.0);
    let mut first: Option<(std::time::Instant, f64)> = None;
    let mut last = (std::time::Instant::now(), 0.0);
    let start = std::time::Instant::now();
    while last.1 < 32.0 * 1024.0 * 1024.0 {
        assert!(start.elapsed() < Duration::from_secs(90), "replay did not finish: {} bytes", last.1);
        let bytes = replayed();
        if bytes > last.1 {
            last = (std::time::Instant::now(), bytes);
            first.get_or_insert(last);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (t0, b0) = first.expect("replay progressed");
    let secs = (last.0 - t0).as_secs_f64();
    let rate = (last.1 - b0) / secs;
    println!(
        "{:.1} MiB replayed in {secs:.2} s: {:.3} MiB/s, image cap 2 MiB/s ({:+.1} %)",
        (last.1 - b0) / 1048576.0,
        rate / 1048576.0,
        (rate / CAP - 1.0) * 100.0
    );
    assert!(
        (rate / CAP - 1.0).abs() <= 0.10,
        "replay rate {rate:.0} B/s is not within 10 % of the cap {CAP}"
    );
    let peer = "peer=\"site-a\"";
    assert_eq!(b.metric("rbd_mirror_rs_peer_bandwidth_limit_bytes", peer), Some(0.0), "no peer cap");
    let waited = b.metric("rbd_mirror_rs_peer_bandwidth_wait_seconds", peer).unwrap_or(0.0);
    println!("waited {waited:.1} s on the image cap");
    assert!(waited >= secs * 0.5, "wait seconds {waited}");
    wait_same_content(&a, &b, &spec);
}
