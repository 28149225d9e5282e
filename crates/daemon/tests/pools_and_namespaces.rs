//! Pools, namespaces and peers that come and go while `rbd-mirror-rs` runs at site-b: a
//! pool mirrored at runtime, a namespace created at runtime (`pool/ns` to `pool/ns`), a peer
//! removed and added back, a mirrored pool removed. Checked with the stock `rbd` CLI; the
//! delays from the change to the daemon's reaction are printed (we aim at ≤ 2 s, stock's
//! `rbd_mirror_pool_replayers_refresh_interval` is 30 s) and bounded generously.

#[path = "../../../tests/support/lab.rs"]
mod lab;
#[path = "support/mirror.rs"]
mod mirror;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use mirror::{daemon_log_since, image_status, signal_daemon, sites, wait_replicated, Daemon, Images};
use serde_json::Value;

/// The bound on "starts or stops within 2 s" (slack for the CLI's own latency).
const REACTION: Duration = Duration::from_secs(10);
/// Features of the test images (journal mode).
const FEATURES: &str = "layering,exclusive-lock,journaling";

/// A pool created on both sites with image-mode mirroring, removed from both on drop with
/// its peers' keys in the config-key store (`rbd/mirror/peer/<pool id>/<peer uuid>`, which
/// removing a pool leaves behind).
struct TestPool {
    name: String,
    /// Its pool id on site-a and site-b.
    ids: [i64; 2],
}

impl TestPool {
    /// Creates `name` on both sites, `rbd pool init`, `rbd mirror pool enable ... image`;
    /// not peered yet.
    fn create(a: &lab::Site, b: &lab::Site, name: &str) -> TestPool {
        let mut pool = TestPool { name: name.to_owned(), ids: [-1, -1] };
        for (i, site) in [a, b].into_iter().enumerate() {
            site.ceph(&["osd", "pool", "create", name, "8", "8"]);
            pool.ids[i] = pool_id(site, name);
            site.rbd(&["pool", "init", name]);
            site.rbd(&["mirror", "pool", "enable", name, "image", "--site-name", site.name]);
        }
        pool
    }
}

/// The id of pool `name` on `site`.
fn pool_id(site: &lab::Site, name: &str) -> i64 {
    let pools: Value = serde_json::from_str(&site.ceph(&["osd", "pool", "ls", "detail", "--format", "json"]))
        .expect("osd pool ls JSON");
    let pool = pools.as_array().into_iter().flatten().find(|p| p["pool_name"] == name);
    pool.and_then(|p| p["pool_id"].as_i64()).unwrap_or_else(|| panic!("no pool {name}: {pools}"))
}

impl Drop for TestPool {
    fn drop(&mut self) {
        let name = self.name.as_str();
        for (site, id) in [lab::site("site-a"), lab::site("site-b")].into_iter().zip(self.ids) {
            for uuid in peer_uuids(&site, name) {
                site.rbd_ok(&["mirror", "pool", "peer", "remove", name, &uuid]);
            }
            site.ceph_ok(&["osd", "pool", "rm", name, name, "--yes-i-really-really-mean-it"]);
            let keys = site.command_output("ceph", &["config-key", "ls"]).unwrap_or_default();
            let keys: Value = serde_json::from_str(&keys).unwrap_or_default();
            let prefix = format!("rbd/mirror/peer/{id}/");
            for key in keys.as_array().into_iter().flatten().filter_map(Value::as_str) {
                if key.starts_with(&prefix) {
                    site.ceph_ok(&["config-key", "rm", key]);
                }
            }
        }
    }
}

/// A namespace created on both sites, its mirroring disabled and removed on drop (declare
/// it before the [`Images`] in it, which must go first).
struct TestNamespace(String);

impl Drop for TestNamespace {
    fn drop(&mut self) {
        for site in [lab::site("site-a"), lab::site("site-b")] {
            site.rbd_ok(&["mirror", "pool", "disable", &self.0]);
            site.rbd_ok(&["namespace", "rm", &self.0]);
        }
    }
}

/// Peers site-b's pool `pool` with site-a's again on drop if the test left it without a
/// peer (the lab's `mirror` pool must stay peered for the other tests).
struct RePeer(String);

impl Drop for RePeer {
    fn drop(&mut self) {
        let b = lab::site("site-b");
        if peer_uuids(&b, &self.0).is_empty() {
            peer(&lab::site("site-a"), &b, &self.0);
        }
    }
}

/// The peer uuids of `pool` on `site` (none if the pool is gone).
fn peer_uuids(site: &lab::Site, pool: &str) -> Vec<String> {
    let info = site.command_output("rbd", &["mirror", "pool", "info", pool, "--format", "json"]);
    let info: Value = info.ok().and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
    info["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["uuid"].as_str().map(str::to_owned))
        .collect()
}

/// Peers `pool` as the lab peers `mirror`: a bootstrap token of site-a imported rx-tx at
/// site-b.
fn peer(a: &lab::Site, b: &lab::Site, pool: &str) {
    let token = a.rbd(&["mirror", "pool", "peer", "bootstrap", "create", "--site-name", a.name, pool]);
    let file = lab::lab_dir().join(format!("{}.token", lab::unique("peer")));
    std::fs::write(&file, token).expect("writing the bootstrap token");
    let imported = b.command_output(
        "rbd",
        &[
            "mirror",
            "pool",
            "peer",
            "bootstrap",
            "import",
            "--site-name",
            b.name,
            "--direction",
            "rx-tx",
            pool,
            file.to_str().expect("utf-8 path"),
        ],
    );
    let _ = std::fs::remove_file(&file);
    if let Err(e) = imported {
        panic!("bootstrap import of {pool} on {}: {e}", b.name);
    }
}

/// A journaling image `spec` on site-a with `data` written, mirrored in journal mode.
fn mirrored_image(a: &lab::Site, spec: &str, data: &str) -> Images {
    a.rbd(&["create", "--size", "8M", "--image-feature", FEATURES, spec]);
    let images = Images(vec![spec.to_owned()]);
    a.bench(spec, "rand", "4K", data);
    a.rbd(&["mirror", "image", "enable", spec, "journal"]);
    images
}

/// Waits (at most [`REACTION`]) for `rbd mirror image status` of `spec` on site-b to pass
/// `done`; returns the time it took from `since`.
fn wait_state(
    b: &lab::Site,
    spec: &str,
    what: &str,
    since: Instant,
    done: impl Fn(&str) -> bool,
) -> Duration {
    lab::wait_for(what, REACTION, || match image_status(b, spec) {
        Ok((state, _)) if done(&state) => Ok(()),
        Ok((state, description)) => Err(format!("{state}: {description}")),
        Err(e) => Err(e),
    });
    since.elapsed()
}

/// `ceph --admin-daemon <site-b daemon's asok> <words>` as JSON.
fn asok_json(b: &lab::Site, words: &[&str]) -> Value {
    let path: PathBuf = b.dir.join("run/client.rbd-mirror.b.asok");
    let out = Command::new("timeout")
        .args(["30", "ceph", "--admin-daemon"])
        .arg(&path)
        .args(words)
        .output()
        .expect("running ceph --admin-daemon");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ceph --admin-daemon {words:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{words:?}: not JSON ({e}): {text}"))
}

/// The pools the site-b daemon runs a pool replayer for (`rbd mirror status`).
fn pool_replayers(b: &lab::Site) -> Vec<String> {
    let status = asok_json(b, &["rbd", "mirror", "status"]);
    status["pool_replayers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["pool"].as_str().map(str::to_owned))
        .collect()
}

/// Writes more to `spec` on site-a and waits until site-b's copy reads the same.
fn still_replicates(a: &lab::Site, b: &lab::Site, spec: &str) {
    a.bench(spec, "rand", "4K", "256K");
    wait_replicated(b, spec, &a.export_sha256(spec), Duration::from_secs(60));
}

#[test]
fn a_pool_mirrored_at_runtime_replicates_and_removing_it_leaves_the_rest_replaying() {
    let (_serial, a, b) = sites();
    let main = format!("{}/{}", lab::POOL, lab::unique("main"));
    let _main = mirrored_image(&a, &main, "256K");
    let log_from = mirror::daemon_log().len();
    let _daemon = Daemon::start();
    wait_replicated(&b, &main, &a.export_sha256(&main), Duration::from_secs(60));

    // A second pool, mirrored on both sites while the daemon runs; peering it (the peer
    // appears on site-b) is what makes it ours to replay.
    let name = lab::unique("pool");
    let _pool = TestPool::create(&a, &b, &name);
    let spec = format!("{name}/img");
    let _images = mirrored_image(&a, &spec, "1M");
    peer(&a, &b, &name);
    let peered = Instant::now();
    let started = wait_state(&b, &spec, "the new pool's image to replay", peered, |s| s == "up+replaying");
    println!("pool mirrored at runtime: {spec} up+replaying {started:?} after the peer import");
    wait_replicated(&b, &spec, &a.export_sha256(&spec), Duration::from_secs(60));
    assert!(pool_replayers(&b).contains(&name));

    // The pool removed at site-b: its pool replayer stops, the daemon stays up and the
    // lab's pool goes on replaying.
    b.ceph(&["osd", "pool", "rm", &name, &name, "--yes-i-really-really-mean-it"]);
    let removed = Instant::now();
    lab::wait_for("the removed pool's pool replayer to stop", REACTION, || {
        let pools = pool_replayers(&b);
        if pools.contains(&name) {
            Err(format!("{pools:?}"))
        } else {
            Ok(())
        }
    });
    println!(
        "pool removed on site-b: its pool replayer gone {:?} after `ceph osd pool rm`",
        removed.elapsed()
    );
    signal_daemon("-0");
    still_replicates(&a, &b, &main);
    let log = daemon_log_since(log_from);
    assert!(!log.contains("panicked"), "the daemon panicked:\n{log}");
}

#[test]
fn a_namespace_mirrored_at_runtime_replicates_to_the_same_namespace() {
    let (_serial, a, b) = sites();
    let _daemon = Daemon::start();
    let ns = format!("{}/{}", lab::POOL, lab::unique("ns"));
    let _namespace = TestNamespace(ns.clone());
    a.rbd(&["namespace", "create", &ns]);
    a.rbd(&["mirror", "pool", "enable", &ns, "image"]);
    let spec = format!("{ns}/img");
    let _images = mirrored_image(&a, &spec, "1M");
    // And one in snapshot mode (its mirror snapshots name the peers of the pool's default
    // namespace, where a pool's peers are recorded).
    let snap_spec = format!("{ns}/snap");
    a.rbd(&["create", "--size", "8M", &snap_spec]);
    let _snap_image = Images(vec![snap_spec.clone()]);
    a.bench(&snap_spec, "rand", "4K", "512K");
    a.rbd(&["mirror", "image", "enable", &snap_spec, "snapshot"]);

    // Mirroring of the namespace enabled at site-b while the daemon runs.
    b.rbd(&["namespace", "create", &ns]);
    b.rbd(&["mirror", "pool", "enable", &ns, "image"]);
    let enabled = Instant::now();
    let started = wait_state(&b, &spec, "the namespace's image to replay", enabled, |s| s == "up+replaying");
    println!("namespace mirrored at runtime: {spec} up+replaying {started:?} after `rbd mirror pool enable`");
    wait_replicated(&b, &spec, &a.export_sha256(&spec), Duration::from_secs(60));
    wait_replicated(&b, &snap_spec, &a.export_sha256(&snap_spec), Duration::from_secs(60));

    // Site-a sees our status in its namespace; site-b's copy is in the same namespace.
    let status = a.rbd_json(&["mirror", "image", "status", &spec]);
    let peer_state = status["peer_sites"][0]["state"].as_str().unwrap_or_default();
    assert_eq!(peer_state, "up+replaying", "site-a: {status}");
    let info = b.rbd_json(&["info", &spec]);
    assert_eq!(info["mirroring"]["primary"], false, "{info}");
    // The admin socket names the image `pool/ns/image`, under its namespace.
    let namespace = ns.split_once('/').map(|(_, n)| n).unwrap_or_default();
    let status = asok_json(&b, &["rbd", "mirror", "status"]);
    let pool = status["pool_replayers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["pool"] == lab::POOL)
        .unwrap_or_else(|| panic!("no pool replayer of {}: {status}", lab::POOL));
    let served = pool["namespaces"].as_array().into_iter().flatten().find(|n| n["name"] == namespace);
    let served = served.unwrap_or_else(|| panic!("namespace {namespace} not served: {pool}"));
    let names: Vec<&str> = served["image_replayers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert!(names.contains(&spec.as_str()) && names.contains(&snap_spec.as_str()), "{served}");
    let image = asok_json(&b, &["rbd", "mirror", "status", &spec]);
    assert_eq!(image["name"], spec, "{image}");
}

#[test]
fn a_peer_removed_stops_replay_and_added_back_resumes_it() {
    let (_serial, a, b) = sites();
    let spec = format!("{}/{}", lab::POOL, lab::unique("peer"));
    let _images = mirrored_image(&a, &spec, "256K");
    let _re_peer = RePeer(lab::POOL.to_owned());
    let _daemon = Daemon::start();
    wait_replicated(&b, &spec, &a.export_sha256(&spec), Duration::from_secs(60));

    let uuids = peer_uuids(&b, lab::POOL);
    assert_eq!(uuids.len(), 1, "site-b's peers: {uuids:?}");
    b.rbd(&["mirror", "pool", "peer", "remove", lab::POOL, &uuids[0]]);
    let removed = Instant::now();
    let stopped = wait_state(&b, &spec, "replay to stop", removed, |s| s.starts_with("down+"));
    println!("peer removed on site-b: {spec} down {stopped:?} after `rbd mirror pool peer remove`");
    assert!(!pool_replayers(&b).contains(&lab::POOL.to_owned()), "the pool replayer still runs");

    // Writes meanwhile arrive once the peer is back.
    a.bench(&spec, "rand", "4K", "256K");
    peer(&a, &b, lab::POOL);
    let added = Instant::now();
    let resumed = wait_state(&b, &spec, "replay to resume", added, |s| s == "up+replaying");
    println!("peer added back on site-b: {spec} up+replaying {resumed:?} after the bootstrap import");
    wait_replicated(&b, &spec, &a.export_sha256(&spec), Duration::from_secs(60));
}

/// An image-map record of `rbd_mirror_leader` that does not decode (which makes the cls
/// `mirror_image_map_list` fail as a whole, for stock as for us): the next leader logs it,
/// removes it and maps its image again; the other image goes on replicating.
#[test]
fn an_image_map_record_that_does_not_decode_is_removed_and_its_image_mapped_again() {
    let (_serial, a, b) = sites();
    let bad = format!("{}/{}", lab::POOL, lab::unique("map-bad"));
    let good = format!("{}/{}", lab::POOL, lab::unique("map-good"));
    let _bad = mirrored_image(&a, &bad, "256K");
    let _good = mirrored_image(&a, &good, "256K");
    let global_id =
        a.rbd_json(&["mirror", "image", "status", &bad])["global_id"].as_str().expect("global_id").to_owned();
    let key = format!("image_map_{global_id}");
    let record = |b: &lab::Site| -> Result<String, String> {
        b.command_output("rados", &["-p", lab::POOL, "getomapval", "rbd_mirror_leader", &key])
    };
    {
        let _daemon = Daemon::start();
        for spec in [&bad, &good] {
            wait_replicated(&b, spec, &a.export_sha256(spec), Duration::from_secs(120));
        }
        lab::wait_for("the image mapped", REACTION, || record(&b));
    }
    let garbage = b.dir.join("garbage-image-map-record");
    std::fs::write(&garbage, b"garbage!").expect("writing the garbage record");
    let garbage = garbage.to_str().expect("utf-8 path").to_owned();
    b.rados(&["-p", lab::POOL, "setomapval", "rbd_mirror_leader", &key, "--input-file", &garbage]);
    assert!(record(&b).expect("garbage in place").contains("garbage!"));

    let from = mirror::daemon_log().len();
    let _daemon = Daemon::start();
    let replaced =
        lab::wait_for("the record removed and written again", Duration::from_secs(60), || match record(&b) {
            Ok(v) if !v.contains("garbage!") => Ok(v),
            Ok(v) => Err(format!("still garbage: {v}")),
            Err(e) => Err(e),
        });
    println!("{key} again:\n{replaced}");
    let log = daemon_log_since(from);
    let line = log
        .lines()
        .find(|l| l.contains("does not decode"))
        .unwrap_or_else(|| panic!("no error logged:\n{log}"));
    println!("logged: {line}");
    assert!(line.contains("ERROR") && line.contains(&key), "{line}");
    still_replicates(&a, &b, &bad);
    still_replicates(&a, &b, &good);
}
