//! Several rbd-mirror instances at one site (Ceph's leader / instances / image-map protocol,
//! ceph-formats.md §5.5) on the lab: two of ours, or one of ours and one stock `rbd-mirror`,
//! at site-b. Each image is replayed by exactly one instance (their admin sockets' image
//! replayers are disjoint and cover every image), and when the leader is killed with
//! SIGKILL the survivor takes every image over within Ceph's timeouts (the watch timeout,
//! 3 missed lock attempts, the instance timeout: about a minute), checksums equal after
//! writes. The stock `rbd` CLI checks the result.

#[path = "../../../tests/support/lab.rs"]
mod lab;
#[path = "support/mirror.rs"]
mod mirror;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use mirror::{sites, wait_replicated, Daemon, Images};
use serde_json::Value;

/// Images may move between instances 5 s after being mapped (stock: 300 s), so a new
/// instance gets its share within the test.
const THROTTLE_OURS: &str = "--rbd-mirror-image-policy-migration-throttle=5";
const THROTTLE_STOCK: &str = "--rbd_mirror_image_policy_migration_throttle=5";

/// Up to: the watch timeout (30 s) + 3 lock attempts 10 s apart + the instance timeout
/// (30 s) + replay restart, with room for a loaded CI machine.
const TAKEOVER: Duration = Duration::from_secs(240);

/// The second rbd-mirror instance at site-b (`--id rbd-mirror.b2`), ours or stock, for the
/// life of the guard.
struct Second;

impl Second {
    fn start(ours: bool, extra: &str) -> Second {
        let bin = if ours { env!("CARGO_BIN_EXE_rbd-mirror-rs") } else { "" };
        lab::lab_script(
            &["mirror-start", "site-b"],
            &[
                ("RBD_MIRROR_LAB_MIRROR_INSTANCE", "2"),
                ("RBD_MIRROR_LAB_MIRROR_BIN", bin),
                ("RBD_MIRROR_LAB_MIRROR_ARGS", extra),
            ],
        );
        Second
    }
}

impl Drop for Second {
    fn drop(&mut self) {
        lab::lab_script(&["mirror-stop", "site-b"], &[("RBD_MIRROR_LAB_MIRROR_INSTANCE", "2")]);
    }
}

/// Instance `n` (1 or 2) at site-b: its admin socket's `rbd mirror status`, or an error
/// while it does not answer.
fn mirror_status(n: u8) -> Result<Value, String> {
    let suffix = if n == 1 { "" } else { "2" };
    let asok = lab::lab_dir().join(format!("site-b/run/client.rbd-mirror.b{suffix}.asok"));
    let out = std::process::Command::new("timeout")
        .args(["20", "ceph", "--admin-daemon"])
        .arg(&asok)
        .args(["rbd", "mirror", "status", "--format", "json"])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("instance {n}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("instance {n}: {e}"))
}

/// The pool `mirror` replayer of instance `n`'s status.
fn pool_replayer(n: u8) -> Result<Value, String> {
    let status = mirror_status(n)?;
    status["pool_replayers"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["pool"] == lab::POOL).cloned())
        .ok_or_else(|| format!("instance {n} serves no pool {}: {status}", lab::POOL))
}

/// The images instance `n` replays (`pool/image`).
fn replayed_by(n: u8) -> Result<BTreeSet<String>, String> {
    let p = pool_replayer(n)?;
    Ok(p["image_replayers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["name"].as_str())
        .map(str::to_owned)
        .collect())
}

/// Waits until both instances answer, one leads, and the leader lists both as instances;
/// returns the leader (1 or 2).
fn wait_two_instances() -> u8 {
    lab::wait_for("a leader with two instances", Duration::from_secs(120), || {
        let (p1, p2) = (pool_replayer(1)?, pool_replayer(2)?);
        let leader = match (p1["leader"] == true, p2["leader"] == true) {
            (true, false) => 1,
            (false, true) => 2,
            other => return Err(format!("leaders {other:?}")),
        };
        let lead = if leader == 1 { &p1 } else { &p2 };
        let instances = lead["instances"].as_array().map_or(0, Vec::len);
        let ids = [p1["instance_id"].clone(), p2["instance_id"].clone()];
        if instances == 2 && ids.iter().all(|id| lead["instances"].as_array().is_some_and(|l| l.contains(id)))
        {
            println!("leader: instance {leader} ({}), instances {}", lead["instance_id"], lead["instances"]);
            Ok(leader)
        } else {
            Err(format!("leader {leader} lists instances {}", lead["instances"]))
        }
    })
}

/// Checks every image is replayed by exactly one of the two instances; returns how many
/// each replays.
fn assert_each_replayed_once(all: &BTreeSet<String>) -> (usize, usize) {
    lab::wait_for("every image replayed by exactly one instance", Duration::from_secs(60), || {
        let (r1, r2) = (replayed_by(1)?, replayed_by(2)?);
        let both: Vec<_> = r1.intersection(&r2).collect();
        assert!(both.is_empty(), "replayed by both instances: {both:?}");
        // (Other mirrored images of the pool may be there too: only the test's count.)
        let union: BTreeSet<String> = r1.union(&r2).cloned().collect();
        if all.is_subset(&union) {
            Ok((r1.intersection(all).count(), r2.intersection(all).count()))
        } else {
            Err(format!("instance 1 {r1:?}, instance 2 {r2:?}"))
        }
    })
}

/// SIGKILL to site-b's instance `n`.
fn kill_9(n: u8) {
    let suffix = if n == 1 { "" } else { "2" };
    let pidfile = lab::lab_dir().join(format!("site-b/run/rbd-mirror.b{suffix}.pid"));
    let pid = std::fs::read_to_string(pidfile).expect("pid file");
    let pid = pid.split_whitespace().next().expect("pid").to_owned();
    assert!(std::process::Command::new("kill").args(["-9", &pid]).status().expect("kill").success());
    println!("kill -9 instance {n} (pid {pid})");
}

/// Mirrored test images on site-a: `journal` journaling images and `snapshot` snapshot-mode
/// ones, each with data.
fn mirrored_images(a: &lab::Site, journal: usize, snapshot: usize) -> (Vec<(String, bool)>, Images) {
    let mut specs = Vec::new();
    for i in 0..journal + snapshot {
        let is_snapshot = i >= journal;
        let spec = format!("{}/{}", lab::POOL, lab::unique(&format!("ha{i}")));
        if is_snapshot {
            a.rbd(&["create", "--size", "32M", &spec]);
        } else {
            a.rbd(&["create", "--size", "32M", "--image-feature", "exclusive-lock,journaling", &spec]);
        }
        specs.push((spec, is_snapshot));
    }
    let images = Images(specs.iter().map(|(s, _)| s.clone()).collect());
    for (spec, is_snapshot) in &specs {
        a.bench(spec, "rand", "4K", "256K");
        a.rbd(&["mirror", "image", "enable", spec, if *is_snapshot { "snapshot" } else { "journal" }]);
    }
    (specs, images)
}

/// Writes to every image on site-a (a new mirror snapshot for snapshot-mode ones), then
/// waits until site-b has the same content, `up+replaying`.
fn write_and_wait(a: &lab::Site, b: &lab::Site, specs: &[(String, bool)], timeout: Duration) {
    for (spec, is_snapshot) in specs {
        a.bench(spec, "rand", "4K", "256K");
        if *is_snapshot {
            a.rbd(&["mirror", "image", "snapshot", spec]);
        }
    }
    let start = Instant::now();
    for (spec, _) in specs {
        let primary = a.export_sha256(spec);
        wait_replicated(
            b,
            spec,
            &primary,
            timeout.saturating_sub(start.elapsed()).max(Duration::from_secs(30)),
        );
    }
}

/// Waits until instance `n` replays every image of `all` (the other being dead).
fn wait_takeover(n: u8, all: &BTreeSet<String>, since: Instant) {
    lab::wait_for(&format!("instance {n} to replay every image"), TAKEOVER, || {
        let mine = replayed_by(n)?;
        let leads = pool_replayer(n)?["leader"] == true;
        if leads && all.is_subset(&mine) {
            Ok(())
        } else {
            Err(format!("leader {leads}, replays {} of {}", mine.len(), all.len()))
        }
    });
    println!(
        "instance {n} leads and replays all {} images {:.0?} after the kill",
        all.len(),
        since.elapsed()
    );
}

#[test]
fn two_of_our_instances_share_the_images_and_survive_a_killed_leader() {
    let (_serial, a, b) = sites();
    let _first = Daemon::start_with(&[THROTTLE_OURS]);
    let _second = Second::start(true, THROTTLE_OURS);
    wait_two_instances();
    let (specs, _images) = mirrored_images(&a, 4, 2);
    let all: BTreeSet<String> = specs.iter().map(|(s, _)| s.clone()).collect();
    write_and_wait(&a, &b, &specs, Duration::from_secs(240));
    let (n1, n2) = assert_each_replayed_once(&all);
    println!("images per instance: {n1} and {n2}");
    assert!(n1 > 0 && n2 > 0, "the images are spread over both instances ({n1}, {n2})");

    // `rbd mirror pool status --verbose` lists both, exactly one the leader.
    let ids: Vec<Value> =
        [1, 2].iter().map(|n| pool_replayer(*n).expect("status")["instance_id"].clone()).collect();
    // (The service map gets each daemon's status every few seconds.)
    lab::wait_for("both instances in `rbd mirror pool status --verbose`", Duration::from_secs(60), || {
        let pool = b.rbd_json(&["mirror", "pool", "status", lab::POOL, "--verbose"]);
        let ours: Vec<&Value> = pool["daemons"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| ids.contains(&d["instance_id"]))
            .collect();
        let leaders = ours.iter().filter(|d| d["leader"] == true).count();
        if ours.len() == 2 && leaders == 1 {
            Ok(())
        } else {
            Err(format!("{} listed, {leaders} leader(s): {}", ours.len(), pool["daemons"]))
        }
    });

    // `rbd mirror leader release` on the leader's admin socket: the other instance leads,
    // every image still replayed exactly once.
    let first_leader = if pool_replayer(1).expect("status")["leader"] == true { 1 } else { 2 };
    let asok = lab::lab_dir()
        .join(format!("site-b/run/client.rbd-mirror.b{}.asok", if first_leader == 1 { "" } else { "2" }));
    let released = Instant::now();
    let out = std::process::Command::new("ceph")
        .arg("--admin-daemon")
        .arg(&asok)
        .args(["rbd", "mirror", "leader", "release"])
        .output()
        .expect("ceph --admin-daemon");
    assert!(out.status.success(), "leader release: {}", String::from_utf8_lossy(&out.stderr));
    let leader = 3 - first_leader;
    lab::wait_for("the other instance to lead", Duration::from_secs(60), || {
        match pool_replayer(leader)?["leader"] == true {
            true => Ok(()),
            false => Err("not yet".into()),
        }
    });
    println!("leader release: instance {leader} leads {:.1?} later", released.elapsed());
    assert_each_replayed_once(&all);
    let survivor = 3 - leader;
    let killed = Instant::now();
    kill_9(leader);
    write_and_wait(&a, &b, &specs, TAKEOVER);
    wait_takeover(survivor, &all, killed);
    write_and_wait(&a, &b, &specs, Duration::from_secs(120));
}

#[test]
fn stock_and_our_instances_share_the_images_and_either_survives_the_other() {
    let (_serial, a, b) = sites();
    let _ours = Daemon::start_with(&[THROTTLE_OURS]);
    let stock = Second::start(false, THROTTLE_STOCK);
    wait_two_instances();
    let (specs, _images) = mirrored_images(&a, 8, 2);
    let all: BTreeSet<String> = specs.iter().map(|(s, _)| s.clone()).collect();
    write_and_wait(&a, &b, &specs, Duration::from_secs(240));
    let (n_ours, n_stock) = assert_each_replayed_once(&all);
    println!("images: ours {n_ours}, stock {n_stock}");
    assert!(n_ours > 0 && n_stock > 0, "the images are spread over both instances ({n_ours}, {n_stock})");
    // No flapping: the same instance replays each image over 10 s.
    let before = (replayed_by(1).expect("ours"), replayed_by(2).expect("stock"));
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(before, (replayed_by(1).expect("ours"), replayed_by(2).expect("stock")), "images moved");

    // The stock instance dies: ours takes everything.
    let killed = Instant::now();
    kill_9(2);
    drop(stock);
    wait_takeover(1, &all, killed);
    write_and_wait(&a, &b, &specs, Duration::from_secs(180));

    // A stock instance joins again and gets its share from our leader; then ours dies:
    // the stock instance takes everything.
    let _stock = Second::start(false, THROTTLE_STOCK);
    wait_two_instances();
    lab::wait_for("the stock instance to get images", Duration::from_secs(120), || {
        let n = replayed_by(2)?.len();
        if n > 0 {
            Ok(n)
        } else {
            Err("none yet".into())
        }
    });
    assert_each_replayed_once(&all);
    let killed = Instant::now();
    kill_9(1);
    wait_takeover(2, &all, killed);
    write_and_wait(&a, &b, &specs, Duration::from_secs(180));
}
