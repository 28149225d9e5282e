//! The admin socket on the lab, driven by the stock `ceph --admin-daemon` CLI exactly as an
//! operator's runbook drives the stock rbd-mirror's.

#[path = "../../../tests/support/lab.rs"]
mod lab;
#[path = "support/mirror.rs"]
mod mirror;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use mirror::{image_id, image_name, sites, wait_new_image_id, wait_status, Daemon, Images};

/// `ceph --admin-daemon <asok> <words>`: exit code and stdout + stderr.
fn asok(path: &PathBuf, words: &[&str]) -> (Option<i32>, String) {
    let out = Command::new("timeout")
        .args(["30", "ceph", "--admin-daemon"])
        .arg(path)
        .args(words)
        .output()
        .expect("running ceph --admin-daemon");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

fn json(path: &PathBuf, words: &[&str]) -> serde_json::Value {
    let (code, text) = asok(path, words);
    assert_eq!(code, Some(0), "ceph --admin-daemon {words:?}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{words:?}: not JSON ({e}): {text}"))
}

#[test]
fn the_stock_cli_reads_status_and_config_through_the_admin_socket() {
    let (_serial, a, b) = sites();
    let spec = format!("{}/{}", lab::POOL, lab::unique("asok"));
    let _images = Images(vec![spec.clone()]);
    a.rbd(&["create", "--size", "16M", "--image-feature", "layering,exclusive-lock,journaling", &spec]);
    a.rbd(&["mirror", "image", "enable", &spec, "journal"]);
    let _daemon = Daemon::start();
    wait_status(&b, &spec, "up+replaying", "");

    // The path the lab's conf names (`admin socket = <run>/$name.asok`).
    let path = b.dir.join("run/client.rbd-mirror.b.asok");
    lab::wait_for("the admin socket", Duration::from_secs(30), || {
        if asok(&path, &["version"]).0 == Some(0) {
            Ok(())
        } else {
            Err(format!("{} does not answer", path.display()))
        }
    });
    let version = json(&path, &["version"]);
    assert!(version["version"].is_string(), "{version}");

    // The daemon's status, as scripts grep it.
    let (code, pretty) = asok(&path, &["rbd", "mirror", "status"]);
    assert_eq!(code, Some(0), "{pretty}");
    println!("{pretty}");
    assert!(pretty.contains("\"leader\": true"), "{pretty}");
    let status: serde_json::Value = serde_json::from_str(&pretty).expect("status JSON");
    let pool = &status["pool_replayers"][0];
    assert_eq!(pool["pool"], lab::POOL, "{status}");
    assert!(pool["peer"].as_str().unwrap_or_default().contains("cluster: site-a"), "{status}");
    assert_eq!(pool["state"], "running", "{status}");
    let images = pool["image_replayers"].as_array().expect("image_replayers");
    let entry =
        images.iter().find(|i| i["name"] == spec.as_str()).unwrap_or_else(|| panic!("{spec} in {status}"));
    assert_eq!(entry["state"], "Replaying", "{status}");

    // Per pool and per image, listed while they run.
    let per_pool = json(&path, &["rbd", "mirror", "status", lab::POOL, "site-a"]);
    assert_eq!(per_pool["pool"], lab::POOL, "{per_pool}");
    let per_image = json(&path, &["rbd", "mirror", "status", &spec]);
    assert_eq!(per_image, serde_json::json!({"name": spec, "state": "Replaying"}));
    let (_, help) = asok(&path, &["help"]);
    assert!(help.contains(&format!("rbd mirror status {spec}")), "{help}");
    // An image this daemon does not run: the CLI refuses, as with stock (EINVAL).
    let other = format!("{}/not-{}", lab::POOL, image_name(&spec));
    let (code, text) = asok(&path, &["rbd", "mirror", "status", &other]);
    assert_eq!(code, Some(22), "{text}");

    // Leadership: released on request; this daemon, the pool's only instance, takes the lock
    // back after `heartbeat interval * max missed heartbeats` (10 s), as a lone stock one.
    for words in [
        &["rbd", "mirror", "leader", "release"][..],
        &["rbd", "mirror", "leader", "release", lab::POOL, "site-a"],
    ] {
        let (code, out) = asok(&path, words);
        assert_eq!((code, out.as_str()), (Some(0), ""), "{words:?} prints nothing, as stock");
        lab::wait_for("the lone instance to lead again", Duration::from_secs(60), || {
            let status = json(&path, &["rbd", "mirror", "status"]);
            let pool = &status["pool_replayers"][0];
            if pool["leader"] == true && pool["leader_instance_id"] == pool["instance_id"] {
                Ok(())
            } else {
                Err(status.to_string())
            }
        });
    }
    // The image deleter's queues, as stock shapes them.
    let deletions = json(&path, &["rbd", "mirror", "deletion", "status", lab::POOL]);
    assert!(deletions["delete_images_queue"].is_array(), "{deletions}");
    assert!(deletions["failed_deletes_queue"].is_array(), "{deletions}");

    // Configuration through the socket.
    let got = json(&path, &["config", "get", "rbd_mirror_concurrent_image_syncs"]);
    assert_eq!(got["rbd_mirror_concurrent_image_syncs"], "5", "{got}");
    let set = json(&path, &["config", "set", "rbd_mirror_concurrent_image_syncs", "4"]);
    assert!(set.get("success").is_some(), "{set}");
    let got = json(&path, &["config", "get", "rbd_mirror_concurrent_image_syncs"]);
    assert_eq!(got["rbd_mirror_concurrent_image_syncs"], "4", "{got}");
    // It stays past the daemon's runtime refresh of the configuration (every 5 s).
    std::thread::sleep(Duration::from_secs(7));
    let got = json(&path, &["config", "get", "rbd_mirror_concurrent_image_syncs"]);
    assert_eq!(got["rbd_mirror_concurrent_image_syncs"], "4", "{got}");
    let (_, text) = asok(&path, &["config", "set", "rbd_mirror_concurrent_image_syncs", "many"]);
    assert!(text.starts_with("ERROR: (22)"), "{text}");
    let fsid = json(&path, &["config", "get", "fsid"]);
    assert_eq!(fsid["fsid"], b.fsid(), "Ceph's own options come from librados");
    let diff = json(&path, &["config", "diff"]);
    assert_eq!(diff["diff"]["rbd_mirror_concurrent_image_syncs"]["final"], "4", "{diff}");
    assert_eq!(json(&path, &["log", "reopen"]), serde_json::json!({}));

    // Perf counters, as the stock daemon's loggers.
    a.bench(&spec, "rand", "4K", "1M");
    let logger = format!("rbd_mirror_image_{spec}");
    let dump = lab::wait_for("replayed entries in perf dump", Duration::from_secs(60), || {
        let dump = json(&path, &["perf", "dump"]);
        let replayed = dump[&logger]["replay"].as_u64().unwrap_or(0);
        if replayed >= 256 && dump["rbd_mirror"]["replay"].as_u64().unwrap_or(0) >= replayed {
            Ok(dump)
        } else {
            Err(format!("{dump}"))
        }
    });
    println!("{dump}");
    assert!(dump[&logger]["replay_bytes"].as_u64().unwrap_or(0) >= 1 << 20, "{dump}");
    // Replay latency, as stock's time average.
    let latency = lab::wait_for("replay latency in perf dump", Duration::from_secs(30), || {
        let dump = json(&path, &["perf", "dump"]);
        let latency = dump[&logger]["replay_latency"].clone();
        if latency["avgcount"].as_u64().unwrap_or(0) >= 256 {
            Ok(latency)
        } else {
            Err(format!("{dump}"))
        }
    });
    assert!(latency["sum"].as_f64().unwrap_or(0.0) > 0.0, "{latency}");
    assert!(latency["avgtime"].as_f64().unwrap_or(0.0) > 0.0, "{latency}");
    let one = json(&path, &["perf", "dump", "rbd_mirror"]);
    assert_eq!(one.as_object().map(|o| o.len()), Some(1), "{one}");
    let schema = json(&path, &["perf", "schema"]);
    assert_eq!(schema["rbd_mirror"]["replay"]["type"], 10, "{schema}");
    assert_eq!(schema["rbd_mirror"]["replay_latency"]["type"], 5, "{schema}");

    // Stop the image: it stays stopped, writes do not arrive; start: they do.
    let (code, out) = asok(&path, &["rbd", "mirror", "stop", &spec]);
    assert_eq!((code, out.as_str()), (Some(0), ""), "stop prints nothing, as stock");
    wait_status(&b, &spec, "up+stopped", "stopped");
    assert_eq!(json(&path, &["rbd", "mirror", "status", &spec])["state"], "Stopped");
    a.bench(&spec, "seq", "4K", "256K");
    let primary = a.export_sha256(&spec);
    std::thread::sleep(Duration::from_secs(4));
    assert_ne!(b.export_sha256(&spec), primary, "nothing replayed while stopped");
    // A resync requested while the image replayer is stopped (issue 17) is done when it
    // starts again: a new local image.
    let old_id = image_id(&b, &spec);
    b.rbd(&["mirror", "image", "resync", &spec]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(image_id(&b, &spec), old_id, "nothing done while the replayer is stopped");
    let (code, _) = asok(&path, &["rbd", "mirror", "start", &spec]);
    assert_eq!(code, Some(0));
    let new_id = wait_new_image_id(&b, &spec, &old_id);
    println!("resync requested while stopped: local image {old_id} replaced by {new_id} after the start");
    lab::wait_for("replay after start", Duration::from_secs(120), || {
        let copy = b.export_sha256(&spec);
        if copy == primary {
            Ok(())
        } else {
            Err(copy)
        }
    });
    wait_status(&b, &spec, "up+replaying", "");
    // Restart of the whole daemon's replayers, and of the pool's.
    let (code, _) = asok(&path, &["rbd", "mirror", "restart"]);
    assert_eq!(code, Some(0));
    let (code, _) = asok(&path, &["rbd", "mirror", "restart", lab::POOL, "site-a"]);
    assert_eq!(code, Some(0));
    lab::wait_for("replaying after restart", Duration::from_secs(120), || {
        let s = json(&path, &["rbd", "mirror", "status", &spec]);
        if s["state"] == "Replaying" {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });

    // The image's counts run across its replayer's restarts.
    let replayed = dump[&logger]["replay"].as_u64().unwrap_or(0);
    let after = json(&path, &["perf", "dump"])[&logger]["replay"].as_u64().unwrap_or(0);
    assert!(after >= replayed, "replay counted {replayed} before the restarts, {after} after");

    // Flush: what the primary has written is applied and its position committed to the
    // primary's journal before the reply (the commit age alone would take 5 s).
    let (_, help) = asok(&path, &["help"]);
    assert!(help.contains(&format!("rbd mirror flush {spec}")), "{help}");
    for round in 0..3 {
        a.bench(&spec, "rand", "4K", "512K");
        let words: &[&str] = match round {
            0 => &["rbd", "mirror", "flush", &spec],
            1 => &["rbd", "mirror", "flush", lab::POOL, "site-a"],
            _ => &["rbd", "mirror", "flush"],
        };
        let (code, out) = asok(&path, words);
        assert_eq!((code, out.as_str()), (Some(0), ""), "{words:?} prints nothing, as stock");
        let journal = a.rbd_json(&["journal", "status", "--image", &spec]);
        let newest = |id: &str| {
            let clients = journal["registered_clients"].as_array().cloned().unwrap_or_default();
            let client = clients.iter().find(|c| c["id"] == id).cloned().unwrap_or_default();
            let p = &client["commit_position"]["object_positions"][0];
            (p["tag_tid"].as_u64(), p["entry_tid"].as_u64())
        };
        let ours = journal["registered_clients"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["id"] != ""))
            .and_then(|c| c["id"].as_str())
            .unwrap_or_default()
            .to_owned();
        assert!(newest("").1.is_some(), "{journal}");
        assert_eq!(newest(&ours), newest(""), "{words:?}: committed at the primary's end: {journal}");
    }
    assert_eq!(b.export_sha256(&spec), a.export_sha256(&spec));
}

#[test]
fn deletion_status_lists_a_failed_deletion_until_it_succeeds() {
    let (_serial, a, b) = sites();
    let spec = format!("{}/{}", lab::POOL, lab::unique("deletion"));
    let _images = Images(vec![spec.clone()]);
    a.rbd(&["create", "--size", "16M", "--image-feature", "layering,exclusive-lock,journaling", &spec]);
    a.rbd(&["mirror", "image", "enable", &spec, "journal"]);
    let _daemon = Daemon::start_with(&["--rbd-mirror-delete-retry-interval=5"]);
    wait_status(&b, &spec, "up+replaying", "");
    let global_id = b.rbd_json(&["mirror", "image", "status", &spec])["global_id"]
        .as_str()
        .expect("global_id")
        .to_owned();
    let path = b.dir.join("run/client.rbd-mirror.b.asok");

    // A client watching site-b's copy holds its removal off (EBUSY).
    let mut watcher = Command::new("rbd")
        .args(["--cluster", "site-b", "-c"])
        .arg(&b.conf)
        .args(["watch", &spec])
        // It watches until its standard input ends.
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("rbd watch");
    std::thread::sleep(Duration::from_secs(2));
    a.rbd(&["mirror", "image", "disable", &spec]);
    let failed = lab::wait_for("the failed deletion listed", Duration::from_secs(120), || {
        let status = json(&path, &["rbd", "mirror", "deletion", "status", lab::POOL]);
        let failed = status["failed_deletes_queue"].as_array().cloned().unwrap_or_default();
        failed.into_iter().find(|d| d["global_image_id"] == global_id.as_str()).ok_or(status.to_string())
    });
    println!("{failed}");
    assert!(failed["retries"].as_u64().unwrap_or(0) >= 1, "{failed}");
    assert!(!failed["error_code"].as_str().unwrap_or_default().is_empty(), "{failed}");
    assert!(!failed["image_id"].as_str().unwrap_or_default().is_empty(), "{failed}");

    // The watcher gone, the retry deletes it and the queues empty.
    let _ = watcher.kill();
    let _ = watcher.wait();
    lab::wait_for("the deletion retried", Duration::from_secs(120), || {
        let status = json(&path, &["rbd", "mirror", "deletion", "status", lab::POOL]);
        let listed = status.to_string().contains(&global_id);
        if !listed && !b.rbd_ok(&["info", &spec]) {
            Ok(())
        } else {
            Err(status.to_string())
        }
    });
}

/// site-b's entries of source `MIRRORING` in `rbd trash ls --all`: image id → the entry.
fn mirroring_trash(b: &lab::Site) -> std::collections::BTreeMap<String, serde_json::Value> {
    let all = b.rbd_json(&["trash", "ls", "--all", "--long", lab::POOL]);
    all.as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["source"] == "MIRRORING")
        .map(|e| (e["id"].as_str().unwrap_or_default().to_owned(), e.clone()))
        .collect()
}

/// Deletion through the RBD trash, as stock: with `rbd_mirroring_delete_delay` = 20 s on
/// site-b's pool, the copy of an image whose mirroring is disabled at site-a goes to site-b's
/// trash (source `MIRRORING`, `rbd trash ls --all`), `rbd mirror deletion status` shows it
/// waiting, and it is still there 8 s later; the daemon is restarted meanwhile, and the new
/// run removes it (its protected snapshot too) once the delay has passed.
#[test]
fn deletion_goes_through_the_trash_and_resumes_after_a_restart() {
    let (_serial, a, b) = sites();
    let spec = format!("{}/{}", lab::POOL, lab::unique("trash"));
    let _images = Images(vec![spec.clone()]);
    a.rbd(&["create", "--size", "16M", "--image-feature", "layering,exclusive-lock,journaling", &spec]);
    a.rbd(&["mirror", "image", "enable", &spec, "journal"]);
    a.bench(&spec, "rand", "4K", "256K");
    // A protected snapshot: removed (unprotected first) with the image.
    a.rbd(&["snap", "create", &format!("{spec}@s1")]);
    a.rbd(&["snap", "protect", &format!("{spec}@s1")]);
    let _delay = PoolDelay(&b);
    b.rbd(&["config", "pool", "set", lab::POOL, "rbd_mirroring_delete_delay", "20"]);
    let daemon = Daemon::start();
    wait_status(&b, &spec, "up+replaying", "");
    lab::wait_for("the snapshot on site-b", Duration::from_secs(60), || {
        let snaps = b.rbd(&["snap", "ls", &spec]);
        snaps.contains("s1").then_some(()).ok_or(snaps)
    });
    let local_id = b.rbd_json(&["info", &spec])["id"].as_str().expect("id").to_owned();
    let path = b.dir.join("run/client.rbd-mirror.b.asok");

    a.rbd(&["mirror", "image", "disable", &spec]);
    let moved = std::time::Instant::now();
    let entry = lab::wait_for("site-b's copy in its trash", Duration::from_secs(60), || {
        mirroring_trash(&b).remove(&local_id).ok_or_else(|| format!("{:?}", mirroring_trash(&b)))
    });
    println!("site-b: rbd trash ls --all: {entry}");
    assert_eq!(entry["name"], image_name(&spec), "{entry}");
    assert!(!b.rbd_ok(&["info", &spec]), "the name is released");
    let waiting = json(&path, &["rbd", "mirror", "deletion", "status", lab::POOL]);
    println!("deletion status: {waiting}");
    let queued = waiting["delete_images_queue"].as_array().cloned().unwrap_or_default();
    let item =
        queued.iter().find(|d| d["image_id"] == local_id.as_str()).unwrap_or_else(|| panic!("{waiting}"));
    assert!(item["deferment_end_time"].is_string(), "{item}");

    // Restarted before the delay ends: the next run finds the entry and removes it in time.
    drop(daemon);
    let _daemon = Daemon::start();
    std::thread::sleep(Duration::from_secs(8).saturating_sub(moved.elapsed()));
    assert!(mirroring_trash(&b).contains_key(&local_id), "removed before the delay");
    lab::wait_for("the trashed copy removed", Duration::from_secs(90), || {
        let trash = mirroring_trash(&b);
        if trash.contains_key(&local_id) {
            Err(format!("{trash:?}"))
        } else {
            Ok(())
        }
    });
    let took = moved.elapsed();
    println!("removed from site-b's trash {took:?} after the move");
    assert!(took >= Duration::from_secs(19), "removed after {took:?}, before the delay");
    let status = json(&path, &["rbd", "mirror", "deletion", "status", lab::POOL]);
    assert!(!status.to_string().contains(&local_id), "{status}");
}

/// Removes the pool's `rbd_mirroring_delete_delay` of site-b when the test ends.
struct PoolDelay<'a>(&'a lab::Site);

impl Drop for PoolDelay<'_> {
    fn drop(&mut self) {
        let _ = self.0.rbd_ok(&["config", "pool", "rm", lab::POOL, "rbd_mirroring_delete_delay"]);
    }
}
