//! The DR commands against the lab, run at site-b as the daemon runs there, checked with the
//! stock `rbd` CLI: `lag` (levels and exit codes as a monitoring plugin), `failover
//! --planned` (roles, content, `--dry-run`, re-runs), `verify` (a byte changed in a data
//! object of site-b is found at its offset), `drill` (a scratch copy, a command run
//! against it, no trace left, replication going on), `failover --force` then `failback` run
//! at site-a, and a planned failover that stops part-way.

#[path = "../../../tests/support/lab.rs"]
mod lab;
#[path = "support/mirror.rs"]
mod mirror;

use std::process::Output;
use std::time::Duration;

use mirror::{
    image_name, image_status, mirror_snapshot, resync, sites, snapshots, wait_replicated, wait_status,
    wait_synced, Daemon, Images,
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

/// `--image` arguments of `specs`.
fn image_args<'a>(specs: &[&'a str]) -> Vec<&'a str> {
    specs.iter().flat_map(|s| ["--image", image_name(s)]).collect()
}

/// Snapshot names (every namespace) of `specs` on both sites, and site-b's `rbd ls` and
/// `rbd trash ls` of the pool: what a DR command must leave as it found it.
fn traces(a: &lab::Site, b: &lab::Site, specs: &[&str]) -> Vec<String> {
    let mut out = vec![b.rbd(&["ls", lab::POOL]), b.rbd(&["trash", "ls", lab::POOL])];
    for site in [a, b] {
        for s in specs {
            let names: Vec<String> = snapshots(site, s)
                .iter()
                .map(|v| v["name"].as_str().unwrap_or_default().to_owned())
                .collect();
            out.push(format!("{} {s}: {}", site.name, names.join(" ")));
        }
    }
    out
}

/// Flips one byte of the first data object of site-b's copy of `spec` with `rados put`,
/// behind librbd's back; returns its image offset.
fn corrupt_one_byte(b: &lab::Site, spec: &str) -> u64 {
    let info = b.rbd_json(&["info", spec]);
    let prefix = format!("{}.", info["block_name_prefix"].as_str().expect("block_name_prefix"));
    let object_size = info["object_size"].as_u64().expect("object_size");
    let listed = b.rados(&["-p", lab::POOL, "ls"]);
    let object = listed.lines().filter(|o| o.starts_with(&prefix)).min().expect("a data object").to_owned();
    let number = u64::from_str_radix(&object[prefix.len()..], 16).expect("object number");
    let file = lab::lab_dir().join(lab::unique("verify-object"));
    let path = file.to_str().expect("utf-8 path");
    b.rados(&["-p", lab::POOL, "get", &object, path]);
    let mut data = std::fs::read(&file).expect("reading the object");
    assert!(!data.is_empty(), "{object} is empty");
    let at = 12_345.min(data.len() - 1);
    data[at] ^= 0xff;
    std::fs::write(&file, &data).expect("writing the object");
    b.rados(&["-p", lab::POOL, "put", &object, path]);
    let _ = std::fs::remove_file(&file);
    let offset = number * object_size + at as u64;
    println!("{spec}: flipped byte {at} of {object} on site-b: image offset {offset}");
    offset
}

#[test]
fn verify_finds_a_byte_changed_on_site_b_and_names_its_offset() {
    let (_serial, a, b) = sites();
    let _daemon = Daemon::start();
    let (journal, snapshot, _images) = two_images(&a, "verify");
    wait_both(&a, &b, &journal, &snapshot);
    let specs = [journal.as_str(), snapshot.as_str()];
    let mut args = vec!["verify", "--pool", lab::POOL];
    args.extend(image_args(&specs));
    let before = traces(&a, &b, &specs);

    // --dry-run creates nothing.
    let mut dry = args.clone();
    dry.push("--dry-run");
    let (code, report) = ours_json(&b, &dry);
    assert_eq!(code, 0, "{report:#}");
    for s in &specs {
        assert_eq!(image(&report, s)["outcome"], "would-verify");
    }
    assert_eq!(traces(&a, &b, &specs), before, "--dry-run left a trace");

    // Clean copies verify clean; the journal image's snapshot is gone on both sites after.
    let (code, report) = ours_json(&b, &args);
    assert_eq!(code, 0, "{report:#}");
    for s in &specs {
        let i = image(&report, s);
        assert_eq!(i["outcome"], "clean", "{i:#}");
        assert_eq!(i["objects"], 16, "64 MiB in 4 MiB objects: {i:#}");
        assert_eq!(i["mismatched_bytes"], 0);
    }
    assert!(image(&report, &journal)["point"]
        .as_str()
        .unwrap_or_default()
        .starts_with("snapshot rbd-mirror-rs.verify."));
    assert!(image(&report, &snapshot)["point"].as_str().unwrap_or_default().starts_with("mirror snapshot "));
    assert_eq!(traces(&a, &b, &specs), before, "verify left a trace");

    // One byte changed in a data object of each copy: found, named by offset, exit 1.
    let offsets: Vec<u64> = specs.iter().map(|s| corrupt_one_byte(&b, s)).collect();
    let (code, report) = ours_json(&b, &args);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["mismatched"], 2);
    for (s, offset) in specs.iter().zip(&offsets) {
        let i = image(&report, s);
        assert_eq!(i["outcome"], "mismatch", "{i:#}");
        assert_eq!(i["mismatched_bytes"], 1, "{i:#}");
        assert_eq!(i["mismatched_objects"], 1, "{i:#}");
        assert_eq!(i["mismatches"], serde_json::json!([{"offset": offset, "length": 1}]), "{i:#}");
    }
    let plain = ours(&b, &args);
    assert_eq!(plain.status.code(), Some(1));
    let text = String::from_utf8_lossy(&plain.stdout);
    for offset in &offsets {
        assert!(text.contains(&format!("offset {offset} length 1")), "{text}");
    }
    assert_eq!(traces(&a, &b, &specs), before, "verify left a trace");
}

#[test]
fn drill_copies_site_b_into_a_scratch_image_runs_a_command_and_leaves_no_trace() {
    let (_serial, a, b) = sites();
    let _daemon = Daemon::start();
    let (journal, snapshot, _images) = two_images(&a, "drill");
    wait_both(&a, &b, &journal, &snapshot);
    let specs = [journal.as_str(), snapshot.as_str()];
    let before = traces(&a, &b, &specs);
    let out_file = lab::lab_dir().join(lab::unique("drill-out"));
    let cmd = format!(
        "rbd --cluster \"$RBD_MIRROR_DRILL_CLUSTER\" -c \"$RBD_MIRROR_DRILL_CONF\" --id \"$RBD_MIRROR_DRILL_ID\" \
         export --no-progress \"$RBD_MIRROR_DRILL_SPEC\" - | sha256sum | sed \"s|-|$RBD_MIRROR_DRILL_IMAGE|\" >> '{}'",
        out_file.display()
    );
    let mut args = vec!["drill", "--pool", lab::POOL, "--exec", &cmd];
    args.extend(image_args(&specs));

    // `rbd mirror image status` of both copies, every 300 ms while the drill runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (stop, b, specs) = (stop.clone(), lab::site("site-b"), [journal.clone(), snapshot.clone()]);
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for s in &specs {
                    seen.push(image_status(&b, s).map(|(state, _)| state).unwrap_or_else(|e| e));
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            seen
        })
    };
    let (code, report) = ours_json(&b, &args);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = poller.join().expect("status poller");
    assert_eq!(code, 0, "{report:#}");
    let exported = std::fs::read_to_string(&out_file).unwrap_or_default();
    let _ = std::fs::remove_file(&out_file);
    for s in &specs {
        let i = image(&report, s);
        assert_eq!(i["outcome"], "passed", "{i:#}");
        assert_eq!(i["exec_status"], 0, "{i:#}");
        assert_eq!(i["removed"], true, "{i:#}");
        assert!(i["bytes_copied"].as_u64().unwrap_or(0) > 0, "{i:#}");
        // The command read the scratch copy: the primary's content.
        let line = format!("{}  {s}", a.export_sha256(s));
        assert!(exported.lines().any(|l| l == line), "{line} not in the command's output:\n{exported}");
    }
    assert!(
        !seen.is_empty() && seen.iter().all(|s| s == "up+replaying"),
        "status during the drill: {seen:?}"
    );
    assert_eq!(traces(&a, &b, &specs), before, "the drill left a trace");

    // Replication went on: a new write reaches site-b.
    a.bench(&journal, "rand", "4K", "256K");
    wait_replicated(&b, &journal, &a.export_sha256(&journal), Duration::from_secs(60));
}

/// Site-a's monitor, manager and OSD stopped with SIGSTOP for the life of the guard
/// (SIGCONT on drop): the site is unreachable, its clients time out.
struct SiteFrozen(Vec<String>);

impl SiteFrozen {
    fn freeze(site: &str) -> SiteFrozen {
        let run = lab::lab_dir().join(site).join("run");
        // Continued on drop, even when a later one fails.
        let mut frozen = SiteFrozen(Vec::new());
        for entry in std::fs::read_dir(&run).expect("the site's run directory").flatten() {
            if entry.path().extension().is_some_and(|e| e == "pid") {
                // `<pid> <command line>`, as lab.sh writes it.
                let text = std::fs::read_to_string(entry.path()).expect("pid file");
                let pid = text.split_whitespace().next().expect("a pid").to_owned();
                frozen.0.push(pid.clone());
                assert!(std::process::Command::new("kill")
                    .args(["-STOP", &pid])
                    .status()
                    .expect("kill")
                    .success());
            }
        }
        assert!(frozen.0.len() >= 3, "mon, mgr and osd pid files in {}: {:?}", run.display(), frozen.0);
        println!("{site} frozen: {:?}", frozen.0);
        frozen
    }
}

impl Drop for SiteFrozen {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = std::process::Command::new("kill").args(["-CONT", pid]).status();
        }
    }
}

#[test]
fn forced_failover_with_site_a_frozen_reports_the_data_it_holds_then_failback_from_site_a() {
    let (_serial, a, b) = sites();
    let daemon = Daemon::start();
    let (journal, snapshot, _images) = two_images(&a, "force");
    wait_both(&a, &b, &journal, &snapshot);
    let specs = [journal.as_str(), snapshot.as_str()];
    let replicated: Vec<String> = specs.iter().map(|s| b.export_sha256(s)).collect();
    // Replay stops; site-a is written (and snapshotted) after: those writes are lost.
    drop(daemon);
    std::thread::sleep(Duration::from_secs(2));
    let lost_from =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_secs_f64();
    a.bench(&journal, "rand", "4K", "256K");
    a.bench(&snapshot, "rand", "4K", "256K");
    mirror_snapshot(&a, &snapshot);
    let frozen = SiteFrozen::freeze("site-a");

    let mut args = vec!["failover", "--pool", lab::POOL, "--force"];
    args.extend(image_args(&specs));
    let mut dry = args.clone();
    dry.push("--dry-run");
    let (code, report) = ours_json(&b, &dry);
    assert_eq!(code, 0, "{report:#}");
    assert!(specs.iter().all(|s| !is_primary(&b, s)), "--dry-run promoted");
    let (code, report) = ours_json(&b, &args);
    assert_eq!(code, 0, "{report:#}");
    for s in &specs {
        let i = image(&report, s);
        assert_eq!(i["outcome"], "failed-over", "{i:#}");
        assert_eq!(i["local_role"], "primary", "{i:#}");
        let as_of = i["synced_as_of"].as_f64().unwrap_or_else(|| panic!("no time: {i:#}"));
        // The data here predates the lost writes, and by no more than the test took.
        assert!(as_of <= lost_from, "{s}: as of {as_of}, writes lost from {lost_from}");
        assert!(lost_from - as_of < 120.0, "{s}: as of {as_of}, writes lost from {lost_from}");
        assert!(i["rpo_seconds"].as_f64().unwrap_or(0.0) >= 2.0, "{i:#}");
        println!("{s}: {}, RPO {} s", i["last_replayed"], i["rpo_seconds"]);
    }
    assert_eq!(image(&report, &journal)["entries_behind"], 0);
    // site-b is primary with what was replicated before the writes (site-a still frozen).
    for (s, sha) in specs.iter().zip(&replicated) {
        assert!(is_primary(&b, s), "{s} not primary on site-b");
        assert_eq!(&b.export_sha256(s), sha, "{s}: not the data replicated before the stop");
    }
    // Again: nothing to do.
    let (code, report) = ours_json(&b, &args);
    assert_eq!(code, 0, "{report:#}");
    for s in &specs {
        assert_eq!(image(&report, s)["outcome"], "already-failed-over");
    }

    // site-a returns, with its lost writes; site-b is written after the forced failover:
    // both sites primary.
    drop(frozen);
    b.bench(&journal, "rand", "4K", "256K");
    // The snapshot image's first object only: its failback syncs that object from the
    // snapshot both sites hold, where a resync would copy all 16.
    // (one thread: `rbd bench` spreads its threads over the image)
    b.bench_one_at_a_time(&snapshot, "seq", "4K", "256K");
    mirror_snapshot(&b, &snapshot);
    let expected: Vec<String> = specs.iter().map(|s| b.export_sha256(s)).collect();
    assert_eq!(roles(&a, &b, &specs), [(true, true), (true, true)], "split brain after site-a's return");
    // `failback` at site-a: its daemon resyncs site-a's copies; site-b's replays afterwards.
    let _daemon_b = Daemon::start();
    let mut args = vec!["failback", "--pool", lab::POOL, "--sync-timeout", "240"];
    args.extend(image_args(&specs));
    let before = traces(&a, &b, &specs);
    let mut dry = args.clone();
    dry.push("--dry-run");
    let (code, report) = ours_json(&a, &dry);
    assert_eq!(code, 0, "{report:#}");
    for s in &specs {
        let i = image(&report, s);
        assert_eq!(i["outcome"], "would-fail-back", "{i:#}");
        assert_eq!(i["split_brain"], true, "{i:#}");
    }
    assert_eq!(roles(&a, &b, &specs), [(true, true), (true, true)], "--dry-run changed a role");
    assert_eq!(traces(&a, &b, &specs), before, "--dry-run changed a snapshot");

    // Without site-a's daemon the resync cannot happen: the journal image (first by name)
    // is demoted with its resync requested, then times out; the other is not started.
    let partial = ["failback", "--pool", lab::POOL, "--sync-timeout", "5", "--parallel", "1"];
    let (code, report) = ours_json(&a, &[&partial[..], &image_args(&specs)].concat());
    assert_eq!(code, 1, "{report:#}");
    for (s, (outcome, here, there)) in
        specs.iter().zip([("failed", "non-primary", "primary"), ("not-started", "primary", "primary")])
    {
        let i = image(&report, s);
        assert_eq!(
            (i["outcome"].as_str(), i["local_role"].as_str(), i["peer_role"].as_str()),
            (Some(outcome), Some(here), Some(there)),
            "{i:#}"
        );
    }
    assert!(image(&report, &journal)["error"].as_str().unwrap_or_default().contains("not caught up"));
    assert!(report["next_step"].as_str().unwrap_or_default().contains("run the same failback command again"));
    assert_eq!(roles(&a, &b, &specs), [(false, true), (true, true)], "rbd info after the partial run");

    // With the daemon the same command continues.
    let _daemon_a = Daemon::start_at("site-a");

    let (code, report) = ours_json(&a, &args);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["failed"], 0);
    for s in &specs {
        let i = image(&report, s);
        assert_eq!(i["outcome"], "failed-back", "{i:#}");
        assert_eq!(
            (i["local_role"].as_str(), i["peer_role"].as_str()),
            (Some("primary"), Some("non-primary")),
            "{i:#}"
        );
        println!(
            "{s}: failed back in {} s, {} bytes copied, steps {}",
            i["seconds"], i["bytes_copied"], i["steps"]
        );
    }
    // Journal mode resyncs: 1 MiB + 256 KiB of 4 KiB random writes on site-b's copy, at least.
    let resynced = image(&report, &journal)["bytes_copied"].as_u64().unwrap_or(0);
    assert!(resynced >= 1 << 20, "{report:#}");
    // Snapshot mode syncs from the common snapshot: site-b's one written object (4 MiB at
    // most), not the 16 objects of the image; site-a's writes since are rolled back.
    let i = image(&report, &snapshot);
    let steps = i["steps"].to_string();
    assert!(steps.contains("roll back here to mirror snapshot") && steps.contains("link here"), "{i:#}");
    let delta = i["bytes_copied"].as_u64().unwrap_or(0);
    assert!((256 << 10..=4 << 20).contains(&delta), "{i:#}");
    assert_eq!(report["bytes_copied"].as_u64(), Some(resynced + delta), "{report:#}");
    assert_eq!(roles(&a, &b, &specs), [(true, false), (true, false)], "rbd info after the failback");
    for (s, sha) in specs.iter().zip(&expected) {
        assert_eq!(&a.export_sha256(s), sha, "{s}: site-a does not hold what site-b held");
        wait_status(&b, s, "up+replaying", "");
        assert_eq!(&b.export_sha256(s), sha, "{s}: site-b's copy changed");
    }
    // Replication site-a -> site-b goes on.
    a.bench(&journal, "rand", "4K", "256K");
    wait_replicated(&b, &journal, &a.export_sha256(&journal), Duration::from_secs(60));
    // Again: nothing to do (the plain text this time).
    let plain = ours(&a, &args);
    assert_eq!(plain.status.code(), Some(0));
    let text = String::from_utf8_lossy(&plain.stdout);
    for s in &specs {
        let line = text.lines().find(|l| l.contains(image_name(s))).unwrap_or_default();
        assert!(
            line.contains("already failed back") && line.contains("(here primary, site-b non-primary)"),
            "{text}"
        );
    }
    assert!(text.contains("2 of 2 image(s) done, 0 failed, 0 bytes copied"), "{text}");
}

#[test]
fn planned_failover_stops_at_a_split_brain_image_says_where_each_is_and_a_rerun_completes() {
    let (_serial, a, b) = sites();
    let _daemon = Daemon::start();
    // Three snapshot-mode images whose names sort 1, 2, 3: with `--parallel 1` they are
    // failed over in that order.
    let base = lab::unique("partial");
    let specs: Vec<String> = (1..=3).map(|n| format!("{}/{base}-{n}", lab::POOL)).collect();
    let _images = Images(specs.clone());
    for s in &specs {
        a.rbd(&["create", "--size", "16M", s]);
        a.bench(s, "rand", "4K", "256K");
        a.rbd(&["mirror", "image", "enable", s, "snapshot"]);
    }
    for s in &specs {
        let snap = mirror_snapshot(&a, s);
        wait_synced(&b, s, snap, Duration::from_secs(120));
    }
    let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
    // The cause: image 2 primary on site-b too.
    b.rbd(&["mirror", "image", "promote", "--force", specs[1]]);
    let mut args = vec!["failover", "--pool", lab::POOL, "--planned", "--parallel", "1"];
    args.extend(image_args(&specs));

    let (code, report) = ours_json(&b, &args);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["failed"], 2, "{report:#}");
    let expect = [
        ("failed-over", "primary", "non-primary"),
        ("failed", "primary", "primary"),
        ("not-started", "non-primary", "primary"),
    ];
    for (s, (outcome, here, there)) in specs.iter().zip(expect) {
        let i = image(&report, s);
        assert_eq!(
            (i["outcome"].as_str(), i["local_role"].as_str(), i["peer_role"].as_str()),
            (Some(outcome), Some(here), Some(there)),
            "{i:#}"
        );
    }
    let error = image(&report, specs[1])["error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("split brain"), "{error}");
    assert!(
        report["next_step"].as_str().unwrap_or_default().contains("run the same failover command again"),
        "{report:#}"
    );
    assert_eq!(roles(&a, &b, &specs), [(false, true), (true, true), (true, false)], "rbd info");
    // The same in plain text: each image's roles on both sites, and how to go on.
    let plain = ours(&b, &args);
    assert_eq!(plain.status.code(), Some(1));
    let text = String::from_utf8_lossy(&plain.stdout);
    for (s, words) in specs.iter().zip([
        ["already failed over", "(here primary, site-a non-primary)"],
        ["FAILED", "(here primary, site-a primary)"],
        ["not started", "(here non-primary, site-a primary)"],
    ]) {
        let line = text.lines().find(|l| l.contains(image_name(s))).unwrap_or_default();
        assert!(words.iter().all(|w| line.contains(w)), "{words:?} not in {line:?}");
    }
    assert!(text.contains("ERROR: ") && text.contains("split brain"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("next: ")), "{text}");

    // The cause removed: site-b's copy of image 2 demoted and resynced from site-a.
    b.rbd(&["mirror", "image", "demote", specs[1]]);
    resync(&b, specs[1]);
    let snap = mirror_snapshot(&a, specs[1]);
    wait_synced(&b, specs[1], snap, Duration::from_secs(120));
    let (code, report) = ours_json(&b, &args);
    assert_eq!(code, 0, "{report:#}");
    for (s, outcome) in specs.iter().zip(["already-failed-over", "failed-over", "failed-over"]) {
        assert_eq!(image(&report, s)["outcome"], outcome, "{report:#}");
    }
    assert_eq!(roles(&a, &b, &specs), [(false, true), (false, true), (false, true)], "rbd info");
    for s in &specs {
        assert_eq!(a.export_sha256(s), b.export_sha256(s), "{s}: content differs after the failover");
    }
}
