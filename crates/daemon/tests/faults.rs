//! Faults at site-b and in the peers (issue 20, part 1), with `rbd-mirror-rs` at site-b: a
//! full pool (`ceph osd pool set-quota`), a wrong local key, read-only caps, and peers with
//! a wrong key, of another cluster, or unreachable. Each must be reported by its cause (in
//! `rbd mirror image status` / `rbd mirror pool status` and the log), write nothing, and
//! leave the rest replicating. Every change to the lab is undone by a guard, also when the
//! test fails. docs/faults.md records the cases and figures.
//!
//! The stock `rbd` CLI blocks on a full pool (opening an image registers a watch, a write
//! librados holds back until the pool is no longer full): while site-b's pool is full, the
//! image's status is read on site-a (`peer_sites`), and every call is bounded by `timeout`.

#[path = "../../../tests/support/lab.rs"]
mod lab;
#[path = "support/mirror.rs"]
mod mirror;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mirror::{daemon_log_since, image_name, sites, wait_replicated, Daemon, Images};
use serde_json::Value;

/// Features of the test images (journal mode).
const FEATURES: &str = "layering,exclusive-lock,journaling";

/// Creates a 64 MiB journaling image on site-a with `data` written, mirrored in journal mode.
fn mirrored_image(a: &lab::Site, prefix: &str, data: &str) -> (String, Images) {
    let spec = format!("{}/{}", lab::POOL, lab::unique(prefix));
    a.rbd(&["create", "--size", "64M", "--image-feature", FEATURES, &spec]);
    let images = Images(vec![spec.clone()]);
    a.bench(&spec, "seq", "4M", data);
    a.rbd(&["mirror", "image", "enable", &spec, "journal"]);
    (spec, images)
}

/// Site-b's status of `spec` as site-a shows it (`peer_sites` of `rbd mirror image status`):
/// (state, description). Readable while site-b's pool is full.
fn peer_status(a: &lab::Site, spec: &str) -> Result<(String, String), String> {
    let out = a.command_output("rbd", &["mirror", "image", "status", spec, "--format", "json"])?;
    let v: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    let peer = v["peer_sites"].as_array().and_then(|p| p.iter().find(|p| p["site_name"] == "site-b"));
    let peer = peer.ok_or_else(|| format!("no site-b in {v}"))?;
    Ok((
        peer["state"].as_str().unwrap_or_default().to_owned(),
        peer["description"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// Our journal client's commit position on the primary's journal (`rbd journal status` on
/// site-a; the client id is site-b's mirror uuid).
fn commit_position(a: &lab::Site, spec: &str) -> Value {
    let (pool, image) = spec.split_once('/').expect("pool/image");
    let status = a.rbd_json(&["journal", "status", "--pool", pool, "--image", image]);
    let clients = status["registered_clients"].as_array().cloned().unwrap_or_default();
    let ours = clients.iter().find(|c| c["id"] != "").unwrap_or_else(|| panic!("no mirror client: {status}"));
    ours["commit_position"].clone()
}

/// The flags of pool `pool` on `site` (`ceph osd pool ls detail`), e.g. `full_quota`.
fn pool_flags(site: &lab::Site, pool: &str) -> String {
    let out = site.ceph(&["osd", "pool", "ls", "detail", "--format", "json"]);
    let pools: Value = serde_json::from_str(&out).expect("osd pool ls JSON");
    let p = pools.as_array().into_iter().flatten().find(|p| p["pool_name"] == pool);
    p.and_then(|p| p["flags_names"].as_str()).unwrap_or_default().to_owned()
}

/// A quota on a pool of `site`, removed on drop (`max_bytes 0`), waiting until the pool is
/// no longer flagged full.
struct Quota(lab::Site, &'static str);

impl Quota {
    fn set(site: &lab::Site, pool: &'static str, max_bytes: &str) -> Quota {
        let quota = Quota(site.clone(), pool);
        site.ceph(&["osd", "pool", "set-quota", pool, "max_bytes", max_bytes]);
        quota
    }

    fn remove(&self) {
        self.0.ceph_ok(&["osd", "pool", "set-quota", self.1, "max_bytes", "0"]);
        let end = Instant::now() + Duration::from_secs(60);
        while pool_flags(&self.0, self.1).contains("full") && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Quota {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Site-b's pool `mirror` reaches its quota while site-a writes: replay stops with a status
/// naming the full pool (read on site-a), commits nothing further, and resumes by itself
/// once the quota is removed, with equal content on both sites.
#[test]
fn a_full_pool_pauses_replay_with_its_cause_and_resumes_when_the_quota_is_raised() {
    let (_serial, a, b) = sites();
    let (spec, _images) = mirrored_image(&a, "full", "8M");
    let log_from = mirror::daemon_log().len();
    // A short retry, so the test sees the resume soon (default 30 s).
    let _daemon = Daemon::start_with(&["--rbd_mirror_rs_image_retry_interval", "5"]);
    wait_replicated(&b, &spec, &a.export_sha256(&spec), Duration::from_secs(180));

    // Any quota below what the pool holds marks it full at once.
    let quota = Quota::set(&b, lab::POOL, "1");
    lab::wait_for("site-b's pool flagged full", Duration::from_secs(60), || {
        let flags = pool_flags(&b, lab::POOL);
        if flags.contains("full_quota") {
            Ok(())
        } else {
            Err(flags)
        }
    });
    let full_at = Instant::now();
    a.bench(&spec, "rand", "4K", "2M");
    let primary = a.export_sha256(&spec);
    let (state, description) =
        lab::wait_for("site-b's status to name the full pool", Duration::from_secs(90), || {
            let (state, description) = peer_status(&a, &spec)?;
            if state == "up+error" && description.contains("EDQUOT") {
                Ok((state, description))
            } else {
                Err(format!("{state}: {description}"))
            }
        });
    println!("{:.1}s after the writes: site-b {state}: {description}", full_at.elapsed().as_secs_f64());
    assert!(description.contains("pool full") && description.contains(lab::POOL), "{description}");

    // Nothing is committed past what could not be written: the position stands still
    // (read once the failed attempt's last commit, within `rbd_mirror_journal_commit_age`,
    // is done).
    std::thread::sleep(Duration::from_secs(2));
    let held = commit_position(&a, &spec);
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(commit_position(&a, &spec), held, "the commit position moved while the pool was full");
    println!("commit position held while full: {held}");
    // The daemon keeps running and retries (the log says why each time).
    assert!(daemon_log_since(log_from).contains("EDQUOT"), "the log names the error");
    let status = b.command_output("rbd", &["mirror", "pool", "status", lab::POOL]).unwrap_or_default();
    println!("rbd mirror pool status on site-b while full:\n{status}");

    let raised_at = Instant::now();
    drop(quota);
    // Still `up+error` until the next attempt.
    lab::wait_for("replay to resume", Duration::from_secs(120), || {
        let (state, description) = mirror::image_status(&b, &spec)?;
        if state == "up+replaying" {
            Ok(())
        } else {
            Err(format!("{state}: {description}"))
        }
    });
    wait_replicated(&b, &spec, &primary, Duration::from_secs(120));
    println!(
        "quota removed: replaying again with equal content (sha256 {primary}) {:.1}s after set-quota max_bytes 0",
        raised_at.elapsed().as_secs_f64()
    );
    // Committed every `rbd_mirror_journal_commit_age`.
    let moved = lab::wait_for("the commit position to move on", Duration::from_secs(30), || {
        let now = commit_position(&a, &spec);
        if now != held {
            Ok(now)
        } else {
            Err(format!("still {now}"))
        }
    });
    println!("commit position after the resume: {moved}");
}

/// A scratch pool of site-b, mirrored with one peer, deleted on drop.
struct ScratchPool(lab::Site, String);

impl ScratchPool {
    fn create(b: &lab::Site, name: &str) -> ScratchPool {
        let pool = ScratchPool(b.clone(), name.to_owned());
        b.ceph_ok(&["osd", "pool", "delete", name, name, "--yes-i-really-really-mean-it"]);
        b.ceph(&["osd", "pool", "create", name, "8", "8"]);
        b.rbd(&["pool", "init", name]);
        b.rbd(&["mirror", "pool", "enable", name, "image", "--site-name", b.name]);
        pool
    }

    /// Adds the peer `client@site` reached at `mon_host` with `key` (as `bootstrap import`
    /// stores it: the peer's attributes).
    fn add_peer(&self, client_site: &str, mon_host: &str, key: &str) {
        let key_file = std::env::temp_dir().join(lab::unique("faults-key"));
        std::fs::write(&key_file, format!("{key}\n")).expect("key file");
        let args = [
            "mirror",
            "pool",
            "peer",
            "add",
            &self.1,
            client_site,
            "--remote-mon-host",
            mon_host,
            "--remote-key-file",
            key_file.to_str().expect("utf-8 path"),
        ];
        let out = self.0.command_output("rbd", &args);
        let _ = std::fs::remove_file(&key_file);
        out.unwrap_or_else(|e| panic!("peer add on {}: {e}", self.1));
    }

    /// `rbd mirror pool status <pool> --verbose` on site-b.
    fn status(&self) -> String {
        self.0
            .command_output("rbd", &["mirror", "pool", "status", &self.1, "--verbose"])
            .unwrap_or_else(|e| e)
    }

    /// The pool's objects on site-b (`rados ls`).
    fn objects(&self) -> Vec<String> {
        self.0.rados(&["-p", &self.1, "ls"]).lines().map(str::to_owned).collect()
    }
}

impl Drop for ScratchPool {
    fn drop(&mut self) {
        self.0.ceph_ok(&["osd", "pool", "delete", &self.1, &self.1, "--yes-i-really-really-mean-it"]);
    }
}

/// A key cephx never issued.
const WRONG_KEY: &str = "AQBUEQlrAAAAABAAwTCV1/uNxnNPjaVaj2xZ2w==";

/// Site-a's peer bootstrap token for pool `mirror`, decoded (client id, key, mon_host).
fn bootstrap_token(a: &lab::Site) -> Value {
    let token = a.rbd(&["mirror", "pool", "peer", "bootstrap", "create", "--site-name", "site-a", lab::POOL]);
    let out = Command::new("bash")
        .args(["-c", &format!("echo '{}' | base64 -d", token.trim())])
        .output()
        .expect("base64 -d");
    serde_json::from_slice(&out.stdout).expect("the token is base64 JSON")
}

/// Three scratch pools on site-b, each with a broken peer: a wrong key, a peer token of
/// another cluster (site-a's token for pool `mirror`, which site-a has no counterpart of
/// here), an unreachable monitor. Each is reported by its cause in `rbd mirror pool status`
/// (the daemon's callout, `health: ERROR`) and the log, within the connect timeout; nothing
/// is written to them; pool `mirror` replicates meanwhile.
#[test]
fn broken_peers_are_reported_by_cause_while_the_other_pool_replicates() {
    let (_serial, a, b) = sites();
    let (spec, _images) = mirrored_image(&a, "badpeer", "4M");
    let key_pool = ScratchPool::create(&b, "faults-peer-key");
    let other_pool = ScratchPool::create(&b, "faults-peer-other");
    let gone_pool = ScratchPool::create(&b, "faults-peer-gone");
    // site-a's bootstrap token for pool mirror: a valid client and key of site-a.
    let token = bootstrap_token(&a);
    let (token_mon, token_key) =
        (token["mon_host"].as_str().expect("mon_host"), token["key"].as_str().expect("key"));
    let token_client = format!("client.{}", token["client_id"].as_str().expect("client_id"));
    let log_from = mirror::daemon_log().len();
    let _daemon = Daemon::start_with(&["--connect-timeout", "5"]);
    let started = Instant::now();
    key_pool.add_peer(&format!("{token_client}@site-a"), &a.mon_host(), WRONG_KEY);
    other_pool.add_peer(&format!("{token_client}@site-c"), token_mon, token_key);
    // Nothing listens on port 9 of site-a's address.
    let closed = a
        .mon_host()
        .split(',')
        .next()
        .unwrap_or_default()
        .rsplit_once(':')
        .expect("mon address")
        .0
        .to_owned();
    let closed = format!("{closed}:9]");
    gone_pool.add_peer(&format!("{token_client}@site-a"), &closed, token_key);

    let fsid_a = a.fsid();
    let cases = [
        (&key_pool, vec!["authentication failed", "cluster site-a as client.rbd-mirror-peer", "peer site-a"]),
        (&other_pool, vec!["a cluster without this pool", &fsid_a, "peer site-c"]),
        (&gone_pool, vec!["no monitor answered within 5s", &closed, "peer site-a"]),
    ];
    for (pool, expected) in &cases {
        let status = lab::wait_for(&format!("{} reported", pool.1), Duration::from_secs(60), || {
            let s = pool.status();
            if s.contains("health: ERROR") && expected.iter().all(|e| s.contains(e)) {
                Ok(s)
            } else {
                Err(s)
            }
        });
        let callout = status.lines().find(|l| l.contains("callouts:") && l.contains(expected[0]));
        println!(
            "{:.1}s: {}: {}",
            started.elapsed().as_secs_f64(),
            pool.1,
            callout.unwrap_or_default().trim()
        );
        // Never connected: no leader election, no instance object, no image.
        let objects = pool.objects();
        assert!(
            !objects
                .iter()
                .any(|o| o.starts_with("rbd_mirror_leader") || o.starts_with("rbd_mirror_instance")),
            "{}: {objects:?}",
            pool.1
        );
    }
    let log = daemon_log_since(log_from);
    for pool in ["faults-peer-key", "faults-peer-other", "faults-peer-gone"] {
        assert!(
            log.lines().any(|l| l.contains(&format!("pool={pool}")) && l.contains("pool replayer failed")),
            "the log reports {pool}"
        );
    }
    assert!(!a.ceph(&["osd", "pool", "ls"]).contains("faults-peer"), "nothing was created on site-a");

    // The healthy pool replicates meanwhile.
    a.bench(&spec, "rand", "4K", "1M");
    wait_replicated(&b, &spec, &a.export_sha256(&spec), Duration::from_secs(120));
    println!(
        "{:.1}s: {} replicated while the broken peers were retried",
        started.elapsed().as_secs_f64(),
        image_name(&spec)
    );
}

/// SIGTERM while a pool replayer is still connecting to a peer whose monitor never answers
/// (an address nothing routes to): the daemon stops within seconds, not after the connect
/// timeout (it was killed by `lab.sh mirror-stop` after 20 s, the connection attempt not
/// cancellable and the runtime waiting for the blocking librados call).
#[test]
fn a_stop_does_not_wait_for_a_peer_connection_under_way() {
    let (_serial, a, b) = sites();
    let pool = ScratchPool::create(&b, "faults-peer-dark");
    let token = bootstrap_token(&a);
    let token_key = token["key"].as_str().expect("key");
    // TEST-NET-1 (RFC 5737): packets to it go nowhere, the monitor session never answers.
    pool.add_peer("client.rbd-mirror-peer@site-a", "192.0.2.1:6789", token_key);
    let log_from = mirror::daemon_log().len();
    let daemon = Daemon::start_with(&["--connect-timeout", "120"]);
    lab::wait_for("the pool replayer connecting", Duration::from_secs(30), || {
        let log = daemon_log_since(log_from);
        log.lines()
            .any(|l| l.contains("pool=faults-peer-dark") && l.contains("starting the pool replayer"))
            .then_some(())
            .ok_or_else(|| "not yet".to_owned())
    });
    std::thread::sleep(Duration::from_secs(2));
    let stopping = Instant::now();
    drop(daemon);
    let took = stopping.elapsed();
    let log = daemon_log_since(log_from);
    println!("stopped in {took:.1?} while connecting to the dark peer");
    assert!(log.contains("all image replayers stopped"), "no clean stop in the log: {log}");
    assert!(took < Duration::from_secs(10), "the stop took {took:.1?}");
}

/// Our binary at site-b run in the foreground as the lab runs it, with `extra` arguments;
/// its own log, admin socket and metrics address, so it does not meet the lab's daemon's.
fn foreground(b: &lab::Site, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rbd-mirror-rs"));
    c.current_dir(&b.dir)
        .args(["--cluster", b.name, "-c"])
        .arg(&b.conf)
        .args(["-f", "--connect-timeout", "20", "--metrics-addr", "127.0.0.1:0"])
        .args(extra);
    c
}

/// A wrong key for the daemon's own client: it stops at once with exit status 1 and the
/// cause (authentication, which cluster, which client) on stderr and in its log; nothing is
/// retried silently.
#[test]
fn a_wrong_local_key_stops_the_daemon_with_the_cause() {
    let (_serial, _a, b) = sites();
    let dir = std::env::temp_dir().join(lab::unique("faults-wrong-key"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let keyring = dir.join("wrong.keyring");
    std::fs::write(&keyring, format!("[client.rbd-mirror.b]\n\tkey = {WRONG_KEY}\n")).expect("keyring");
    let log = dir.join("daemon.log");
    let started = Instant::now();
    let mut cmd = foreground(&b, &["--id", "rbd-mirror.b", "--keyring"]);
    cmd.arg(&keyring).arg("--log-file").arg(&log).arg("--admin-socket").arg(dir.join("asok"));
    let stderr_file = dir.join("stderr");
    let stderr_out = std::fs::File::create(&stderr_file).expect("stderr file");
    let mut daemon =
        Foreground(cmd.stdout(Stdio::null()).stderr(stderr_out).spawn().expect("starting rbd-mirror-rs"));
    let status = lab::wait_for("the daemon to exit", Duration::from_secs(60), || {
        daemon.0.try_wait().map_err(|e| e.to_string())?.ok_or_else(|| "still running".to_owned())
    });
    let elapsed = started.elapsed();
    let stderr = std::fs::read_to_string(&stderr_file).unwrap_or_default();
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status.code(), Some(1), "exit status; stderr: {stderr}");
    let cause = "connect to cluster site-b as client.rbd-mirror.b: authentication failed";
    assert!(stderr.contains(cause), "{stderr}");
    assert!(logged.contains(cause), "the log file names the cause: {logged}");
    println!("exit 1 after {:.1}s: {}", elapsed.as_secs_f64(), stderr.lines().last().unwrap_or_default());
}

/// Our daemon, started by the test (not the lab), killed (by its pid) on drop.
struct Foreground(Child);

impl Drop for Foreground {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A cephx user of site-b, removed on drop with its keyring.
struct User(lab::Site, String, std::path::PathBuf);

impl Drop for User {
    fn drop(&mut self) {
        self.0.ceph_ok(&["auth", "rm", &self.1]);
        let _ = std::fs::remove_file(&self.2);
    }
}

/// Our daemon at site-b as a client with read-only OSD caps (`profile rbd-read-only`): the
/// pool's callout names the refused write (EPERM, the caps), nothing is written to site-b
/// (a new primary image gets no copy), and the daemon keeps running.
#[test]
fn read_only_caps_are_reported_and_nothing_is_written() {
    let (_serial, a, b) = sites();
    let id = "rbd-mirror.faults-ro";
    let keyring = b.dir.join(format!("site-b.client.{id}.keyring"));
    let _user = User(b.clone(), format!("client.{id}"), keyring.clone());
    b.ceph(&[
        "auth",
        "get-or-create",
        &format!("client.{id}"),
        "mon",
        "profile rbd-mirror",
        "osd",
        "profile rbd-read-only",
        "-o",
        keyring.to_str().expect("utf-8 path"),
    ]);
    // No other daemon at site-b.
    lab::lab_script(&["mirror-stop", "site-b"], &[]);
    let log = b.dir.join("log/client.faults-ro.log");
    let _ = std::fs::remove_file(&log);
    let (spec, _images) = mirrored_image(&a, "readonly", "4M");
    let started = Instant::now();
    let mut cmd = foreground(&b, &["--id", id, "--log-file"]);
    cmd.arg(&log).arg("--admin-socket").arg(b.dir.join("run/faults-ro.asok"));
    let daemon =
        Foreground(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("starting rbd-mirror-rs"));

    let status = lab::wait_for("the pool's callout naming EPERM", Duration::from_secs(60), || {
        let s = b.command_output("rbd", &["mirror", "pool", "status", lab::POOL, "--verbose"])?;
        let ours = s.split("service ").find(|d| d.contains("client_id: faults-ro")).unwrap_or_default();
        if ours.contains("health: ERROR") && ours.contains("EPERM") && ours.contains("caps") {
            Ok(ours.to_owned())
        } else {
            Err(s)
        }
    });
    let callout = status.lines().find(|l| l.contains("callouts:")).unwrap_or_default().trim().to_owned();
    println!("{:.1}s: {callout}", started.elapsed().as_secs_f64());
    std::thread::sleep(Duration::from_secs(10));
    assert!(!b.rbd_ok(&["info", &spec]), "nothing was written on site-b: no copy of {spec}");
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logged.contains("EPERM (Operation not permitted: usually this client's caps"),
        "the log names the cause"
    );
    // The warning is not repeated every second.
    let warnings = logged.lines().filter(|l| l.contains("leader watcher failed;")).count();
    assert!(warnings <= 2, "{warnings} leader warnings in {:.0}s", started.elapsed().as_secs_f64());
    let mut daemon = daemon;
    assert!(daemon.0.try_wait().expect("daemon status").is_none(), "the daemon keeps running");
}
