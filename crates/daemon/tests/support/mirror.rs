//! Helpers of the daemon's end-to-end tests (included with `#[path]` next to `lab`): the
//! mirror daemons of the lab as guards (ours at site-b unless told another site), test image
//! cleanup, `rbd mirror image status` and the site-b daemon's log.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::Value;

use super::lab;

/// The tests of one file each start and stop the sites' daemons: one at a time.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The start of every two-site test: the file's serial guard, then site-a and site-b, whose
/// pool `mirror` has the single peer site-b (site-c is its second peer only while a
/// three_sites.rs test runs; the stock daemon at site-a cannot serve two peers of a pool).
pub fn sites() -> (std::sync::MutexGuard<'static, ()>, lab::Site, lab::Site) {
    let serial = serial();
    let (a, b) = (lab::site("site-a"), lab::site("site-b"));
    let info = a.rbd_json(&["mirror", "pool", "info", lab::POOL]);
    let peers: Vec<&str> =
        info["peers"].as_array().into_iter().flatten().filter_map(|p| p["site_name"].as_str()).collect();
    assert_eq!(
        peers,
        ["site-b"],
        "site-a's pool {} must have the single peer site-b: a three-site test killed before its \
         guard dropped leaves site-c; `tests/lab/lab.sh unpeer-c` (or `up`) removes it",
        lab::POOL
    );
    (serial, a, b)
}

/// The image name of `pool/image`.
pub fn image_name(spec: &str) -> &str {
    spec.split('/').nth(1).expect("pool/image")
}

/// Our daemon at a site (site-b unless [`Daemon::start_at`] says another) for the life of
/// the guard.
pub struct Daemon(&'static str);

impl Daemon {
    pub fn start() -> Daemon {
        Daemon::start_with(&[])
    }

    /// Our daemon at `site`, started as the lab starts it.
    pub fn start_at(site: &'static str) -> Daemon {
        Daemon::start_at_with_env(site, &[], &[])
    }

    /// Started as the lab starts it, with `extra` arguments after the stock ones.
    pub fn start_with(extra: &[&str]) -> Daemon {
        Daemon::start_with_env(extra, &[])
    }

    /// Started as the lab starts it, with `extra` arguments and `env` in its environment.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        Daemon::start_at_with_env("site-b", extra, env)
    }

    fn start_at_with_env(site: &'static str, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        // Never two daemons for one site: stop a stock one left running.
        lab::lab_script(&["mirror-stop", site], &[]);
        let extra = extra.join(" ");
        let mut envs = vec![
            ("RBD_MIRROR_LAB_MIRROR_BIN", env!("CARGO_BIN_EXE_rbd-mirror-rs")),
            ("RBD_MIRROR_LAB_MIRROR_ARGS", extra.as_str()),
        ];
        envs.extend_from_slice(env);
        lab::lab_script(&["mirror-start", site], &envs);
        Daemon(site)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        lab::lab_script(&["mirror-stop", self.0], &[]);
    }
}

/// The stock rbd-mirror daemon at `site` for the life of the guard.
pub struct Stock(pub &'static str);

impl Stock {
    pub fn start(site: &'static str) -> Stock {
        Stock::start_with(site, &[])
    }

    /// Started as the lab starts it, with `extra` arguments after the stock ones.
    pub fn start_with(site: &'static str, extra: &[&str]) -> Stock {
        lab::lab_script(&["mirror-stop", site], &[]);
        lab::lab_script(&["mirror-start", site], &[("RBD_MIRROR_LAB_MIRROR_ARGS", &extra.join(" "))]);
        Stock(site)
    }
}

/// `ceph --admin-daemon <asok> <words>` on our daemon at `site` (its first instance, the
/// socket the lab's conf names); panics unless it succeeds; its stdout.
pub fn admin_command(site: &lab::Site, words: &[&str]) -> String {
    let id = site.name.trim_start_matches("site-");
    let asok = site.dir.join(format!("run/client.rbd-mirror.{id}.asok"));
    let out = std::process::Command::new("timeout")
        .args(["30", "ceph", "--admin-daemon"])
        .arg(&asok)
        .args(words)
        .output()
        .expect("running ceph --admin-daemon");
    assert!(out.status.success(), "ceph --admin-daemon {words:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ceph osd blocklist ls` of `site`: the blocklisted client addresses.
pub fn blocklist(site: &lab::Site) -> std::collections::BTreeSet<String> {
    // Pacific prints the address list, then the (range) list: two JSON arrays.
    let out = site.ceph(&["osd", "blocklist", "ls", "--format", "json"]);
    let mut lists = serde_json::Deserializer::from_str(&out).into_iter::<Value>();
    let entries = lists.next().and_then(Result::ok).unwrap_or_else(|| panic!("blocklist ls: {out}"));
    entries.as_array().into_iter().flatten().filter_map(|e| e["addr"].as_str().map(str::to_owned)).collect()
}

/// The image id of `spec` on `site` (`rbd info`): a new one means the image was recreated.
pub fn image_id(site: &lab::Site, spec: &str) -> String {
    site.rbd_json(&["info", spec])["id"].as_str().unwrap_or_default().to_owned()
}

impl Drop for Stock {
    fn drop(&mut self) {
        lab::lab_script(&["mirror-stop", self.0], &[]);
    }
}

/// Removes the test images (`pool/image`) on every site of the lab (kept with
/// `RBD_MIRROR_TEST_KEEP`).
pub struct Images(pub Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        if std::env::var_os("RBD_MIRROR_TEST_KEEP").is_some() {
            return;
        }
        let sites = lab::started_sites();
        for spec in &self.0 {
            for site in &sites {
                site.rbd_ok(&["mirror", "snapshot", "schedule", "remove", "--image", spec]);
                site.rbd_ok(&["mirror", "image", "disable", "--force", spec]);
                // `snap purge` stops at a protected snapshot.
                let snaps = site.command_output("rbd", &["snap", "ls", spec, "--format", "json"]);
                let snaps: Value = snaps.ok().and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
                for snap in snaps.as_array().into_iter().flatten() {
                    if snap["protected"] == "true" {
                        let name = snap["name"].as_str().unwrap_or_default();
                        site.rbd_ok(&["snap", "unprotect", &format!("{spec}@{name}")]);
                    }
                }
                site.rbd_ok(&["snap", "purge", spec]);
                site.rbd_ok(&["rm", "--no-progress", spec]);
            }
        }
    }
}

/// `rbd mirror image status` of `spec` on `site`: (state, description).
pub fn image_status(site: &lab::Site, spec: &str) -> Result<(String, String), String> {
    let out = site.command_output("rbd", &["mirror", "image", "status", spec, "--format", "json"]);
    let v: Value = serde_json::from_str(&out?).map_err(|e| e.to_string())?;
    Ok((
        v["state"].as_str().unwrap_or_default().to_owned(),
        v["description"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// Waits until `rbd mirror image status` of `spec` on `site` passes `done(state,
/// description)`; returns that status.
pub fn wait_image_status(
    site: &lab::Site,
    spec: &str,
    what: &str,
    timeout: Duration,
    done: impl Fn(&str, &str) -> bool,
) -> (String, String) {
    lab::wait_for(what, timeout, || {
        let s = image_status(site, spec)?;
        if done(&s.0, &s.1) {
            Ok(s)
        } else {
            Err(format!("{s:?}"))
        }
    })
}

/// Waits (up to `timeout`) until site-b's copy of `spec` reads as `primary` (site-a's
/// `rbd export | sha256sum`) with `rbd mirror image status` `up+replaying`; an error status
/// fails at once.
pub fn wait_replicated(b: &lab::Site, spec: &str, primary: &str, timeout: Duration) {
    lab::wait_for(&format!("{spec} replicated"), timeout, || {
        let (state, description) = image_status(b, spec)?;
        assert!(!state.ends_with("error"), "{state}: {description}");
        let copy = b.export_sha256(spec);
        if state == "up+replaying" && copy == primary {
            Ok(())
        } else {
            Err(format!("{state}; site-a {primary}, site-b {copy}"))
        }
    });
}

/// Waits (3 min at most) for `state` with a description that contains `description`.
pub fn wait_status(site: &lab::Site, spec: &str, state: &str, description: &str) {
    let what = format!("{spec} on {}: {state} {description}", site.name);
    wait_image_status(site, spec, &what, Duration::from_secs(180), |s, d| {
        s == state && d.contains(description)
    });
}

/// `rbd mirror image resync` of `spec` on `site`, then waits for the new local image;
/// returns the old and the new image id.
pub fn resync(site: &lab::Site, spec: &str) -> (String, String) {
    let old_id = image_id(site, spec);
    site.rbd(&["mirror", "image", "resync", spec]);
    let new_id = wait_new_image_id(site, spec, &old_id);
    println!("resync: local image {old_id} replaced by {new_id}");
    (old_id, new_id)
}

/// Waits (2 min at most) until the image id of `spec` on `site` is no longer `old`: the
/// image was recreated. Returns the new id.
pub fn wait_new_image_id(site: &lab::Site, spec: &str, old: &str) -> String {
    lab::wait_for("a new local image", Duration::from_secs(120), || {
        let info = site.command_output("rbd", &["info", spec, "--format", "json"])?;
        let v: Value = serde_json::from_str(&info).map_err(|e| e.to_string())?;
        match v["id"].as_str() {
            Some(id) if id != old => Ok(id.to_owned()),
            _ => Err(format!("still {old}: {v}")),
        }
    })
}

/// `kill -9` of the site-b daemon; returns its pid.
pub fn kill_9_daemon() -> String {
    signal_daemon("-9")
}

/// Sends `signal` (a `kill` option: `-STOP`, `-CONT`, ...) to the site-b daemon; returns its pid.
pub fn signal_daemon(signal: &str) -> String {
    let pid = std::fs::read_to_string(lab::lab_dir().join("site-b/run/rbd-mirror.b.pid")).expect("pid file");
    let pid = pid.split_whitespace().next().expect("pid").to_owned();
    assert!(std::process::Command::new("kill").args([signal, &pid]).status().expect("kill").success());
    pid
}

/// The site-b daemon's log so far: the conf's `log file` (`log/$name.log`), where a Ceph
/// daemon started with `-f` (as the lab starts it) writes, not its standard output.
pub fn daemon_log() -> String {
    std::fs::read_to_string(lab::lab_dir().join("site-b/log/client.rbd-mirror.b.log")).unwrap_or_default()
}

/// The site-b daemon's log after its first `from` bytes (a length of [`daemon_log`]).
pub fn daemon_log_since(from: usize) -> String {
    daemon_log().get(from..).unwrap_or_default().to_owned()
}

/// `rbd snap ls --all`, parsed.
pub fn snapshots(site: &lab::Site, spec: &str) -> Vec<Value> {
    site.rbd_json(&["snap", "ls", "--all", spec]).as_array().cloned().unwrap_or_default()
}

/// Takes a mirror snapshot of `spec` on `site`; returns its snap id.
pub fn mirror_snapshot(site: &lab::Site, spec: &str) -> u64 {
    let out = site.rbd(&["mirror", "image", "snapshot", spec]);
    out.trim().trim_start_matches("Snapshot ID:").trim().parse().unwrap_or_else(|e| panic!("{out}: {e}"))
}

/// Waits until `site` holds a complete non-primary snapshot of primary snapshot `snap_id`.
pub fn wait_synced(site: &lab::Site, spec: &str, snap_id: u64, timeout: Duration) {
    lab::wait_for(&format!("{spec}: primary snapshot {snap_id} synced to {}", site.name), timeout, || {
        let (state, description) = image_status(site, spec).unwrap_or_default();
        assert!(!state.ends_with("error"), "replay of {spec} failed: {state}: {description}");
        // Not there yet while the daemon creates it.
        let listed = site.command_output("rbd", &["snap", "ls", "--all", spec, "--format", "json"])?;
        let listed: Vec<Value> = serde_json::from_str(&listed).map_err(|e| e.to_string())?;
        let done = listed.iter().any(|s| {
            let ns = &s["namespace"];
            ns["type"] == "mirror"
                && ns["state"].as_str().is_some_and(|st| st.contains("non-primary") || st == "demoted")
                && ns["primary_snap_id"].as_u64() == Some(snap_id)
                && ns["complete"] == true
        });
        if done {
            Ok(())
        } else {
            Err(format!("{state}: {description}"))
        }
    });
}

/// Enables snapshot mirroring of `spec` on `a` (its primary site); returns the first primary
/// mirror snapshot the enable took.
pub fn enable_snapshot_mirroring(a: &lab::Site, spec: &str) -> u64 {
    a.rbd(&["mirror", "image", "enable", spec, "snapshot"]);
    snapshots(a, spec)
        .iter()
        .filter(|s| s["namespace"]["type"] == "mirror")
        .filter_map(|s| s["id"].as_u64())
        .max()
        .expect("the enable took a mirror snapshot")
}

/// Creates an image with `features` on site-a, removed at the end with the guard.
pub fn journaling_image(a: &lab::Site, prefix: &str, size: &str, features: &str) -> (String, Images) {
    let spec = format!("{}/{}", lab::POOL, lab::unique(prefix));
    a.rbd(&["create", "--size", size, "--image-feature", features, &spec]);
    let images = Images(vec![spec.clone()]);
    (spec, images)
}

/// Enables journal mirroring of `spec` on site-a.
pub fn enable_journal_mirroring(a: &lab::Site, spec: &str) {
    a.rbd(&["mirror", "image", "enable", spec, "journal"]);
}

/// Creates a 64 MiB journaling image on site-a, mirrored in journal mode.
pub fn mirrored_journal_image(a: &lab::Site, prefix: &str) -> (String, Images) {
    let (spec, images) = journaling_image(a, prefix, "64M", "layering,exclusive-lock,journaling");
    enable_journal_mirroring(a, &spec);
    (spec, images)
}

/// Waits (4 min at most) until site-b's copy of `spec` reads as site-a's (`rbd export |
/// sha256sum`); an error status fails at once.
pub fn wait_same_content(a: &lab::Site, b: &lab::Site, spec: &str) {
    let primary = a.export_sha256(spec);
    lab::wait_for(&format!("{spec}: equal content on both sites"), Duration::from_secs(240), || {
        let (state, description) = image_status(b, spec)?;
        assert!(!state.ends_with("error"), "replay of {spec} failed: {state}: {description}");
        let s = b.export_sha256(spec);
        if s == primary {
            Ok(())
        } else {
            Err(format!("site-a {primary}, site-b {s}"))
        }
    });
}

/// The value of `name=<number>` in a log line; panics without one.
pub fn log_field(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.trim_end_matches(',').parse().ok())
        .unwrap_or_else(|| panic!("no {name}= in {line}"))
}

/// Where one entry of a primary journal lies (see [`newest_journal_entry`]).
#[derive(Debug, Clone)]
pub struct JournalEntryAt {
    /// The journal data object.
    pub object: String,
    /// The entry's offset in it.
    pub offset: usize,
    /// Its encoded length (header, payload and CRC).
    pub len: usize,
    /// Its tag and entry tids.
    pub tag_tid: u64,
    pub entry_tid: u64,
}

/// The newest entry (by tag, then entry tid) whose payload exceeds 1 KiB (a write's) in the
/// active object set of the primary journal of `spec` on `a`.
pub fn newest_journal_entry(a: &lab::Site, spec: &str) -> JournalEntryAt {
    use journal_reader::entry::decode_object;
    use rbd_types::cls_journal::data_object_name;
    let image_id = a.rbd_json(&["info", spec])["id"].as_str().expect("image id").to_owned();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let rados = rados_ffi::Rados::connect(&a.admin_config()).await.expect("connect");
        let io = rados.ioctx(lab::POOL, "").await.expect("pool");
        let header = journal_reader::tail::read_header(&io, &image_id).await.expect("journal header");
        let width = u64::from(header.splay_width);
        let mut newest: Option<JournalEntryAt> = None;
        for n in header.active_set * width..(header.active_set + 1) * width {
            let name = data_object_name(io.pool_id(), &image_id, n);
            let Ok(bytes) = io.read_full(&name).await else { continue };
            let entries = decode_object(&name, &bytes).expect("journal object decodes").entries;
            for e in entries.into_iter().filter(|e| e.payload.len() > 1024) {
                if newest.as_ref().is_none_or(|x| (e.tag_tid, e.entry_tid) > (x.tag_tid, x.entry_tid)) {
                    newest = Some(JournalEntryAt {
                        object: name.clone(),
                        offset: e.offset,
                        len: e.encoded_len(),
                        tag_tid: e.tag_tid,
                        entry_tid: e.entry_tid,
                    });
                }
            }
        }
        newest.expect("the journal has entries")
    })
}

/// `len` bytes at `at` of RADOS object `object` of the lab's pool on `site`.
pub fn object_read(site: &lab::Site, object: &str, at: u64, len: usize) -> Vec<u8> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let rados = rados_ffi::Rados::connect(&site.admin_config()).await.expect("connect");
        let io = rados.ioctx(lab::POOL, "").await.expect("pool");
        io.read(object, at, len).await.expect("read").to_vec()
    })
}

/// Writes `bytes` at `at` of RADOS object `object` of the lab's pool on `site`.
pub fn object_write(site: &lab::Site, object: &str, at: u64, bytes: &[u8]) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let rados = rados_ffi::Rados::connect(&site.admin_config()).await.expect("connect");
        let io = rados.ioctx(lab::POOL, "").await.expect("pool");
        io.write(object, at, bytes).await.expect("write");
    })
}
