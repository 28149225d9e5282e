//! `rbd-mirror-rs check` against the lab: what it reports must match `rbd mirror pool info`
//! on both sites, and a broken peer must be reported as such without hiding the rest.

#[path = "../../../tests/support/lab.rs"]
mod lab;

use std::process::{Command, Output};

use serde_json::Value;

/// Runs our binary as the stock daemon is run: `--cluster <site> -c <site>.conf --id ...`,
/// from the site's directory.
fn check(site: &lab::Site, client_id: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rbd-mirror-rs"))
        .current_dir(&site.dir)
        .args(["--cluster", site.name, "-c"])
        .arg(&site.conf)
        .args(["--id", client_id, "--connect-timeout", "20", "check"])
        .args(extra)
        .output()
        .expect("running rbd-mirror-rs")
}

fn check_json(site: &lab::Site, client_id: &str, extra: &[&str]) -> (bool, Value) {
    let mut args = vec!["--format", "json"];
    args.extend_from_slice(extra);
    let out = check(site, client_id, &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("check output is not JSON ({e}); stderr: {stderr}"));
    // How it ended, for a failure's message (an exit by a signal after the report was
    // printed is not an error count).
    if !out.status.success() {
        println!("check on {} ended with {}; stderr: {stderr}", site.name, out.status);
    }
    (out.status.success(), report)
}

#[test]
fn check_matches_rbd_mirror_pool_info_on_both_sites() {
    let a = lab::site("site-a");
    let b = lab::site("site-b");
    // site-a: every mirrored pool (the default); site-b: pool mirror named explicitly, as
    // another test makes a scratch pool there concurrently.
    let site_b_pools: &[&str] = &["--pool", lab::POOL];
    for (site, other, id, selection) in
        [(&a, &b, "rbd-mirror.a", &[][..]), (&b, &a, "rbd-mirror.b", site_b_pools)]
    {
        let (ok, report) = check_json(site, id, selection);
        assert!(ok, "check on {} failed: {report:#}", site.name);
        assert_eq!(report["errors"], 0);
        assert_eq!(report["cluster"], site.name);
        assert_eq!(report["client"], format!("client.{id}"));
        assert_eq!(report["fsid"], site.fsid());
        println!("{}: fsid {} (ours) = {} (ceph fsid)", site.name, report["fsid"], site.fsid());

        let info = site.rbd_json(&["mirror", "pool", "info", lab::POOL, "--all"]);
        assert_eq!(report["site_name"], info["site_name"]);
        let pools = report["pools"].as_array().expect("pools");
        let pool = pools.iter().find(|p| p["pool"] == lab::POOL).expect("pool mirror in the report");
        assert_eq!(pool["mode"], info["mode"]);
        let peers = pool["peers"].as_array().expect("peers");
        let info_peers = info["peers"].as_array().expect("rbd peers");
        assert_eq!(peers.len(), info_peers.len(), "same number of peers as rbd mirror pool info");
        assert!(!peers.is_empty(), "the lab peers the sites");
        for ip in info_peers {
            let p = peers.iter().find(|p| p["uuid"] == ip["uuid"]).expect("each rbd peer is reported");
            for field in ["site_name", "direction", "client_name", "mirror_uuid", "mon_host"] {
                assert_eq!(p[field], ip[field], "peer field {field} on {}", site.name);
            }
            // We really reached the peer: its fsid and mirror uuid are the other site's.
            assert_eq!(p["fsid"], other.fsid(), "peer of {} is {}", site.name, other.name);
            let other_uuid =
                other.rados(&["-p", lab::POOL, "getomapval", "rbd_mirroring", "mirror_uuid", "/dev/stdout"]);
            assert_eq!(p["remote_mirror_uuid"].as_str().unwrap_or_default(), other_uuid.trim());
            assert_eq!(p["remote_mode"], "image");
        }
        // The plain rendering names the same peers and ends with the summary.
        let plain = check(site, id, selection);
        let text = String::from_utf8_lossy(&plain.stdout);
        assert!(plain.status.success(), "{text}");
        assert!(text.contains(&site.fsid()) && text.contains(&other.fsid()), "{text}");
        assert!(text.trim_end().ends_with("0 error(s)"), "{text}");
    }
}

/// A second mirrored pool on site-b whose only peer has a wrong key: that peer gets a clear
/// authentication error, the healthy pool is still checked, and the exit status is 1.
#[test]
fn check_reports_a_bad_peer_without_hiding_the_rest() {
    let b = lab::site("site-b");
    let a = lab::site("site-a");
    let pool = "check-bad-peer";
    let _guard = PoolGuard(b.clone(), pool);
    b.ceph_ok(&["osd", "pool", "delete", pool, pool, "--yes-i-really-really-mean-it"]);
    b.ceph(&["osd", "pool", "create", pool, "8", "8"]);
    b.rbd(&["pool", "init", pool]);
    b.rbd(&["mirror", "pool", "enable", pool, "image"]);
    let key_file = std::env::temp_dir().join(lab::unique("wrong-key"));
    std::fs::write(&key_file, "AQBUEQlrAAAAABAAwTCV1/uNxnNPjaVaj2xZ2w==\n").expect("key file");
    let key_file = key_file.to_str().expect("utf-8 path").to_owned();
    let uuid = b.rbd(&[
        "mirror",
        "pool",
        "peer",
        "add",
        pool,
        "client.nobody@site-a",
        "--remote-mon-host",
        &a.mon_host(),
        "--remote-key-file",
        &key_file,
    ]);
    let _ = std::fs::remove_file(&key_file);
    assert!(!uuid.trim().is_empty(), "peer add prints the peer uuid");

    let (ok, report) = check_json(&b, "admin", &["--pool", lab::POOL, "--pool", pool]);

    assert!(!ok, "a failed peer makes check exit non-zero: {report:#}");
    assert_eq!(report["errors"], 1, "{report:#}");
    let pools = report["pools"].as_array().expect("pools");
    let good = pools.iter().find(|p| p["pool"] == lab::POOL).expect("healthy pool still reported");
    assert_eq!(good["peers"][0]["fsid"], a.fsid());
    assert!(good["peers"][0]["error"].is_null());
    let bad = pools.iter().find(|p| p["pool"] == pool).expect("bad pool reported");
    let err = bad["peers"][0]["error"].as_str().expect("the bad peer carries an error");
    assert!(err.contains("authentication failed") && err.contains("client.nobody"), "{err}");
}

/// Deletes the scratch pool even when the test fails.
struct PoolGuard(lab::Site, &'static str);

impl Drop for PoolGuard {
    fn drop(&mut self) {
        let _ = self.0.ceph_ok(&["osd", "pool", "delete", self.1, self.1, "--yes-i-really-really-mean-it"]);
    }
}

#[test]
fn check_fails_clearly_when_the_local_cluster_is_unreachable() {
    let dir = std::env::temp_dir().join(lab::unique("check-nowhere"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let conf = dir.join("nowhere.conf");
    std::fs::write(&conf, "[global]\nmon host = v2:127.0.0.1:1\nauth client required = none\n")
        .expect("conf");
    let out = Command::new(env!("CARGO_BIN_EXE_rbd-mirror-rs"))
        .current_dir(&dir)
        .args(["--cluster", "nowhere", "-c"])
        .arg(&conf)
        .args(["--connect-timeout", "2", "check"])
        .output()
        .expect("running rbd-mirror-rs");
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("no monitor answered within 2s"), "{text}");
}
