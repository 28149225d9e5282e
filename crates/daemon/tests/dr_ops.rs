//! The DR commands against the lab, run at site-b as the daemon runs there, checked with the
//! stock `rbd` CLI: `lag` (levels and exit codes as a monitoring plugin) and `failover
//! --planned` (roles, content, `--dry-run`, re-runs).

#[path = "../../../tests/support/lab.rs"]
mod lab;
#[path = "support/mirror.rs"]
mod mirror;

use std::process::Output;
use std::time::Duration;

use mirror::{
    image_name, image_status, mirror_snapshot, sites, wait_replicated, wait_synced, Daemon, Images,
};
use serde_json::Value;

/// `rbd-mirror-rs --cluster site-b -c site-b.conf --id admin <args>` from site-b's directory.
fn ours(b: &lab::Site, args: &[&str]) -> Output {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rbd-mirror-rs"))
        .current_dir(&b.dir)
        .args(["--cluster", b.name, "-c"])
        .arg(&b.conf)
        .args(["--id", "admin", "--connect-timeout", "20"])
        .args(args)
        .output()
        .expect("running rbd-mirror-rs");
    println!("$ rbd-mirror-rs {}\n{}", args.join(" "), String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Runs `args` with `--format json`: (exit code, report).
fn ours_json(b: &lab::Site, args: &[&str]) -> (i32, Value) {
    let mut a = args.to_vec();
    a.extend(["--format", "json"]);
    let out = ours(b, &a);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e})"));
    (out.status.code().expect("exit code"), v)
}

/// `lag` of the given images.
fn lag(b: &lab::Site, specs: &[&str], thresholds: &[&str]) -> (i32, Value) {
    let mut args = vec!["lag", "--pool", lab::POOL];
    for s in specs {
        args.extend(["--image", image_name(s)]);
    }
    args.extend_from_slice(thresholds);
    ours_json(b, &args)
}

fn image<'a>(report: &'a Value, spec: &str) -> &'a Value {
    let name = image_name(spec);
    report["images"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["image"] == name)
        .expect("image in the report")
}

/// A journaling image and a snapshot-mode image of site-a, 64 MiB, written and mirrored.
fn two_images(a: &lab::Site, prefix: &str) -> (String, String, Images) {
    let journal = format!("{}/{}", lab::POOL, lab::unique(&format!("{prefix}-j")));
    let snapshot = format!("{}/{}", lab::POOL, lab::unique(&format!("{prefix}-s")));
    let images = Images(vec![journal.clone(), snapshot.clone()]);
    a.rbd(&["create", "--size", "64M", "--image-feature", "layering,exclusive-lock,journaling", &journal]);
    a.rbd(&["create", "--size", "64M", &snapshot]);
    a.bench(&journal, "rand", "4K", "1M");
    a.bench(&snapshot, "rand", "4K", "1M");
    a.rbd(&["mirror", "image", "enable", &journal, "journal"]);
    a.rbd(&["mirror", "image", "enable", &snapshot, "snapshot"]);
    (journal, snapshot, images)
}

/// Waits until both images of [`two_images`] are replicated to site-b.
fn wait_both(a: &lab::Site, b: &lab::Site, journal: &str, snapshot: &str) {
    wait_replicated(b, journal, &a.export_sha256(journal), Duration::from_secs(120));
    let snap = mirror_snapshot(a, snapshot);
    wait_synced(b, snapshot, snap, Duration::from_secs(120));
}

/// `rbd info`'s `mirroring primary` of `spec` on `site`.
fn is_primary(site: &lab::Site, spec: &str) -> bool {
    site.rbd_json(&["info", spec])["mirroring"]["primary"].as_bool().expect("mirroring primary")
}

fn roles(a: &lab::Site, b: &lab::Site, specs: &[&str]) -> Vec<(bool, bool)> {
    specs.iter().map(|s| (is_primary(a, s), is_primary(b, s))).collect()
}

#[test]
fn lag_is_ok_while_replaying_then_warning_and_critical_once_replay_stops() {
    let (_serial, a, b) = sites();
    let daemon = Daemon::start();
    let (journal, snapshot, _images) = two_images(&a, "lag");
    wait_both(&a, &b, &journal, &snapshot);

    let (code, report) = lag(&b, &[&journal, &snapshot], &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["level"], "ok");
    for (spec, mode) in [(&journal, "journal"), (&snapshot, "snapshot")] {
        let i = image(&report, spec);
        assert_eq!(i["mode"], mode);
        assert_eq!(i["role"], "non-primary");
        assert_eq!(i["level"], "ok", "{i:#}");
        // The state is `rbd mirror image status`'s.
        let (state, _) = image_status(&b, spec).expect("rbd mirror image status");
        assert_eq!(i["state"], state.as_str());
        assert_eq!(i["entries_behind"], 0, "{i:#}");
        assert!(i["last_sync"].as_f64().is_some(), "{i:#}");
    }
    assert_eq!(image(&report, &journal)["seconds_behind"], 0.0);

    // Replay stops: our daemon is stopped while site-a is written.
    drop(daemon);
    a.bench(&journal, "rand", "4K", "256K");
    std::thread::sleep(Duration::from_secs(2));
    let (code, report) = lag(&b, &[&journal], &["--warn", "1", "--crit", "3600"]);
    let i = image(&report, &journal);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(i["level"], "warning");
    assert!(i["entries_behind"].as_u64().unwrap_or(0) >= 64, "256 KiB of 4 KiB writes behind: {i:#}");
    let behind = i["seconds_behind"].as_f64().expect("seconds behind");
    assert!((2.0..60.0).contains(&behind), "the oldest unreplayed write is ~2 s old: {behind}");
    let (code, report) = lag(&b, &[&journal], &["--warn", "1", "--crit", "2"]);
    assert_eq!(code, 2, "{report:#}");
    assert_eq!(image(&report, &journal)["level"], "critical");
    // Plain output: a summary line a monitoring system shows.
    let plain = ours(
        &b,
        &["lag", "--pool", lab::POOL, "--image", image_name(&journal), "--warn", "1", "--crit", "2"],
    );
    let text = String::from_utf8_lossy(&plain.stdout);
    assert!(text.starts_with("CRITICAL: 1 image(s)"), "{text}");
    assert_eq!(plain.status.code(), Some(2));
}

#[test]
fn planned_failover_moves_the_primary_to_site_b_with_nothing_lost() {
    let (_serial, a, b) = sites();
    let _daemon = Daemon::start();
    let (journal, snapshot, _images) = two_images(&a, "failover");
    wait_both(&a, &b, &journal, &snapshot);
    // Written after the last sync: the demotion must carry it over.
    a.bench(&journal, "rand", "4K", "512K");
    a.bench(&snapshot, "rand", "4K", "512K");
    let specs = [journal.as_str(), snapshot.as_str()];
    let mut args = vec!["failover", "--pool", lab::POOL, "--planned"];
    for s in &specs {
        args.extend(["--image", image_name(s)]);
    }

    // --dry-run changes nothing.
    let before = roles(&a, &b, &specs);
    assert_eq!(before, [(true, false), (true, false)]);
    let mut dry = args.clone();
    dry.push("--dry-run");
    let (code, report) = ours_json(&b, &dry);
    assert_eq!(code, 0, "{report:#}");
    for s in &specs {
        assert_eq!(image(&report, s)["outcome"], "would-fail-over");
    }
    assert_eq!(roles(&a, &b, &specs), before, "--dry-run changed a role");

    let (code, report) = ours_json(&b, &args);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["failed"], 0);
    for s in &specs {
        let i = image(&report, s);
        assert_eq!(i["outcome"], "failed-over", "{i:#}");
        assert_eq!(i["rpo_seconds"], 0.0);
        assert_eq!(
            (i["local_role"].as_str(), i["peer_role"].as_str()),
            (Some("primary"), Some("non-primary"))
        );
        println!("{s}: failed over in {} s", i["seconds"]);
    }
    assert_eq!(roles(&a, &b, &specs), [(false, true), (false, true)], "rbd info after the failover");
    for s in &specs {
        assert_eq!(a.export_sha256(s), b.export_sha256(s), "{s}: content differs after the failover");
    }

    // Again: nothing to do, success.
    let (code, report) = ours_json(&b, &args);
    assert_eq!(code, 0, "{report:#}");
    for s in &specs {
        assert_eq!(image(&report, s)["outcome"], "already-failed-over");
    }
    assert_eq!(roles(&a, &b, &specs), [(false, true), (false, true)]);
}
