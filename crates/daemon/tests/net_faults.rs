//! Issue 20, network and OSD faults, with `rbd-mirror-rs` at site-b: the daemon cut off
//! from site-a, then from its own cluster site-b, for 60 s each (a network partition of this
//! one process: the clusters keep talking among themselves), and an OSD stopped in the
//! middle of a full sync (site-a's) and of journal replay (site-b's). Each time the daemon
//! stays up, says so where an operator looks (`rbd mirror image status`, `/metrics`), and
//! resumes by itself afterwards with nothing lost: `rbd export | sha256sum` equal on both
//! sites after writes made during the fault. docs/faults.md records the cases and figures.
//!
//! The partition: the daemon starts in a cgroup-v2 directory of its own
//! (`RBD_MIRROR_LAB_MIRROR_CGROUP`, `lab.sh` writes its pid to `cgroup.procs` before the
//! exec, so every socket it opens carries that cgroup), and an iptables rule with the
//! cgroup match drops what it sends to the cluster's monitor and daemon ports (`DROP`, as a
//! partition does: no reset, connections and connects time out). The rules live in a chain
//! of this lab instance, jumped to from `OUTPUT`, and go with the guard, also when the test
//! fails (a killed test's leftovers are removed at the next one's start). Needs root,
//! iptables (`deploy/install-deps.sh`) and cgroup v2 mounted (pure or hybrid); a machine
//! without them fails the test with the cause, never skips it.

#[path = "../../../tests/support/lab.rs"]
mod lab;
#[path = "support/mirror.rs"]
mod mirror;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use mirror::{
    daemon_log_since, enable_journal_mirroring, enable_snapshot_mirroring, image_name, journaling_image,
    mirror_snapshot, sites, wait_same_content, wait_synced, Daemon, Images,
};
use serde_json::Value;

/// How long each partition lasts (issue 20).
const PARTITION: Duration = Duration::from_secs(60);

/// The lab instance's number (the chain and cgroup names carry it: labs run side by side).
fn instance() -> String {
    std::env::var("RBD_MIRROR_LAB_INSTANCE").ok().filter(|i| !i.is_empty()).unwrap_or_else(|| "0".into())
}

/// Where cgroup v2 is mounted: `/sys/fs/cgroup` (unified) or `/sys/fs/cgroup/unified`
/// (hybrid), as `/proc/self/mounts` says.
fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("reading /proc/self/mounts");
    let root = mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, kind) = (f.next(), f.next()?, f.next()?);
        (kind == "cgroup2").then(|| PathBuf::from(dir))
    });
    root.unwrap_or_else(|| {
        panic!("no cgroup2 file system mounted (/proc/self/mounts): the partition needs one")
    })
}

/// A cgroup-v2 directory of this lab instance that our daemon starts in; removed on drop
/// (once the daemon, dropped before it, has left it).
struct Cgroup {
    /// Its directory under the cgroup2 mount.
    dir: PathBuf,
    /// Its path from the cgroup2 root, as iptables' `--path` takes it.
    path: String,
}

impl Cgroup {
    fn create() -> Cgroup {
        let path = format!("/rbd-mirror-lab{}-net-faults", instance());
        let dir = cgroup2_root().join(path.trim_start_matches('/'));
        if !dir.is_dir() {
            std::fs::create_dir(&dir).unwrap_or_else(|e| {
                panic!("creating cgroup {} (needs root and cgroup v2): {e}", dir.display())
            });
        }
        Cgroup { dir, path }
    }

    /// The environment that makes `lab.sh mirror-start` start the daemon in it.
    fn env(&self) -> (&'static str, &str) {
        ("RBD_MIRROR_LAB_MIRROR_CGROUP", self.dir.to_str().expect("utf-8 path"))
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Empty once the daemon's threads are gone.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("could not remove cgroup {} (a process left in it?)", self.dir.display());
    }
}

/// The site-b daemon's pid (its lab pid file).
fn daemon_pid() -> u32 {
    let pid = std::fs::read_to_string(lab::lab_dir().join("site-b/run/rbd-mirror.b.pid")).expect("pid file");
    pid.split_whitespace().next().and_then(|p| p.parse().ok()).expect("pid")
}

/// Whether process `pid` still runs (not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

/// `iptables` with `args`; its stderr as the error.
fn iptables(args: &[&str]) -> Result<(), String> {
    let out = Command::new("iptables")
        .args(["-w", "10"])
        .args(args)
        .output()
        .map_err(|e| format!("running iptables (deploy/install-deps.sh installs it): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Our daemon cut off from one cluster: what its cgroup sends to the cluster's monitor and
/// daemon ports is dropped. Healed on drop.
struct Partition {
    chain: String,
    healed: bool,
}

impl Partition {
    /// The chain of this lab instance (`OUTPUT` jumps to it while a partition lasts).
    fn chain() -> String {
        format!("rbd-mirror-lab{}-cut", instance())
    }

    /// Removes the chain and the jumps to it (a killed test's too); quiet if there are none.
    fn remove(chain: &str) {
        while iptables(&["-D", "OUTPUT", "-j", chain]).is_ok() {}
        let _ = iptables(&["-F", chain]);
        let _ = iptables(&["-X", chain]);
    }

    /// Cuts the daemon of `cgroup` off from `site`: TCP to its address on the monitor ports
    /// (`<prefix>300`, `<prefix>789`) and the daemons' (`<prefix>800-899`), as lab.sh
    /// lays them out. Replies of the daemon's own listeners (`/metrics`) are not touched.
    fn cut(cgroup: &Cgroup, site: &lab::Site) -> Partition {
        let chain = Partition::chain();
        Partition::remove(&chain);
        let mon = site.mon_host();
        let v2 = mon.trim_start_matches('[').split(',').next().unwrap_or_default().trim_start_matches("v2:");
        let (ip, port) = v2.rsplit_once(':').unwrap_or_else(|| panic!("bad mon host {mon}"));
        let prefix = port.parse::<u32>().unwrap_or_else(|_| panic!("bad mon port in {mon}")) / 1000;
        let ports = format!("{prefix}300,{prefix}789,{prefix}800:{prefix}899");
        let setup = iptables(&["-N", &chain])
            .and_then(|()| {
                iptables(&[
                    "-A",
                    &chain,
                    "-d",
                    ip,
                    "-p",
                    "tcp",
                    "-m",
                    "multiport",
                    "--dports",
                    &ports,
                    "-m",
                    "cgroup",
                    "--path",
                    &cgroup.path,
                    "-j",
                    "DROP",
                ])
            })
            .and_then(|()| iptables(&["-I", "OUTPUT", "-j", &chain]));
        let partition = Partition { chain, healed: false };
        if let Err(e) = setup {
            panic!("cutting the daemon off from {} (iptables, cgroup match): {e}", site.name);
        }
        partition
    }

    /// Packets the rule dropped so far (`iptables -L -v -x`).
    fn dropped(&self) -> u64 {
        let out = Command::new("iptables")
            .args(["-w", "10", "-L", &self.chain, "-v", "-n", "-x"])
            .output()
            .expect("iptables -L");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .filter(|l| l.contains("DROP"))
            .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }

    fn heal(&mut self) {
        if !self.healed {
            Partition::remove(&self.chain);
            self.healed = true;
        }
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.heal();
    }
}

/// Starts our daemon at site-b in `cgroup` and checks that it runs there.
fn start_in(cgroup: &Cgroup, extra: &[&str]) -> Daemon {
    let daemon = Daemon::start_with_env(extra, &[cgroup.env()]);
    let pid = daemon_pid();
    let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    assert!(
        membership.lines().any(|l| l.starts_with("0::") && l.ends_with(&cgroup.path)),
        "the daemon (pid {pid}) is not in cgroup {}: {membership}",
        cgroup.path
    );
    daemon
}

/// `tool args` against `site`, bounded to `secs` (a call to a cluster whose OSD is down
/// blocks): its stdout, or why not.
fn bounded(site: &lab::Site, secs: u32, tool: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("timeout")
        .arg(secs.to_string())
        .args([tool, "--cluster", site.name, "-c"])
        .arg(&site.conf)
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else if out.status.code() == Some(124) {
        Err(format!("no answer within {secs} s"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// A status: (state, description).
type Status = (String, String);

/// `rbd mirror image status` of `spec` on `site` (bounded to 10 s): site's own status, and
/// the other site's as `peer_sites` lists it.
fn statuses(site: &lab::Site, spec: &str) -> Result<(Status, Option<Status>), String> {
    let out = bounded(site, 10, "rbd", &["mirror", "image", "status", spec, "--format", "json"])?;
    let v: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    let pair = |v: &Value| {
        (
            v["state"].as_str().unwrap_or_default().to_owned(),
            v["description"].as_str().unwrap_or_default().to_owned(),
        )
    };
    let peer = v["peer_sites"].as_array().and_then(|p| p.first()).map(pair);
    Ok((pair(&v), peer))
}

/// Our journal client's commit position on site-a's journal of `spec` (bounded to 10 s).
fn commit_position(a: &lab::Site, spec: &str) -> Result<Value, String> {
    let (pool, image) = spec.split_once('/').expect("pool/image");
    let out =
        bounded(a, 10, "rbd", &["journal", "status", "--pool", pool, "--image", image, "--format", "json"])?;
    let status: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    let clients = status["registered_clients"].as_array().cloned().unwrap_or_default();
    let ours = clients.iter().find(|c| c["id"] != "").ok_or_else(|| format!("no mirror client: {status}"))?;
    Ok(ours["commit_position"].clone())
}

/// One look at the daemon during a fault: seconds into it, site-b's status of the image,
/// site-a's view of it (`peer_sites`), and the image's lag metrics (`/metrics`).
struct Look {
    at: f64,
    status: String,
    peer: String,
    lag: Option<f64>,
    behind: Option<f64>,
}

fn look(since: Instant, a: &lab::Site, b: &lab::Site, spec: &str) -> Look {
    let show = |s: &Status| format!("{}: {}", s.0, s.1);
    let status = statuses(b, spec).map_or_else(|e| format!("({e})"), |(own, _)| show(&own));
    let peer = match statuses(a, spec) {
        Ok((_, Some(peer))) => show(&peer),
        Ok((_, None)) => "-".into(),
        Err(e) => format!("({e})"),
    };
    let label = format!("image=\"{}\"", image_name(spec));
    Look {
        at: since.elapsed().as_secs_f64(),
        status,
        peer,
        lag: b.metric("rbd_mirror_rs_image_lag_seconds", &label),
        behind: b.metric("rbd_mirror_rs_image_entries_behind_primary", &label),
    }
}

fn print_looks(title: &str, looks: &[Look]) {
    println!("\n{title}");
    println!("| s | site-b's status | site-a's view of it | lag_seconds | entries_behind_primary |");
    println!("|---|---|---|---|---|");
    let show = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
    for l in looks {
        println!("| {:.0} | {} | {} | {} | {} |", l.at, l.status, l.peer, show(l.lag), show(l.behind));
    }
}

/// Waits (2 min at most) until both site-b's status of `spec` and site-a's view of it are
/// `up+replaying`; returns how long that took.
fn wait_up_on_both(a: &lab::Site, b: &lab::Site, spec: &str) -> Duration {
    let start = Instant::now();
    lab::wait_for("up+replaying on site-b and in site-a's view", Duration::from_secs(120), || {
        let (own, _) = statuses(b, spec)?;
        let (_, peer) = statuses(a, spec)?;
        match (&own, &peer) {
            ((s, _), Some((p, _))) if s == "up+replaying" && p == "up+replaying" => Ok(()),
            _ => Err(format!("site-b {own:?}, site-a's view {peer:?}")),
        }
    });
    start.elapsed()
}

/// A journal-mode image (64 MiB, 8 MiB written) and a snapshot-mode image (32 MiB
/// written) of site-a, both mirrored.
fn two_images(a: &lab::Site, prefix: &str) -> (String, String, Images) {
    let (journal, mut images) =
        journaling_image(a, &format!("{prefix}-j"), "64M", "layering,exclusive-lock,journaling");
    let snapshot = format!("{}/{}", lab::POOL, lab::unique(&format!("{prefix}-s")));
    images.0.push(snapshot.clone());
    a.rbd(&["create", "--size", "32M", &snapshot]);
    a.bench(&journal, "seq", "4M", "8M");
    a.bench(&snapshot, "seq", "4M", "32M");
    enable_journal_mirroring(a, &journal);
    enable_snapshot_mirroring(a, &snapshot);
    (journal, snapshot, images)
}

/// The common part of the two partition cases: a journal-mode and a snapshot-mode image
/// replicated by our daemon, started in a cgroup of its own; with `syncing`, a third
/// (journal-mode) image in the middle of its initial sync; then, the daemon cut off from
/// one site, site-a's clients write to both images and take a mirror snapshot.
struct CutOff {
    /// Dropped first (fields drop in order): the rules go before the daemon and its cgroup.
    partition: Partition,
    daemon: Daemon,
    cgroup: Cgroup,
    journal: String,
    snapshot: String,
    /// The journal-mode image still in its initial sync when the partition began.
    syncing: Option<String>,
    _images: Images,
    log_from: usize,
    pid: u32,
    /// The journal image's commit position on site-a before the partition.
    before: Value,
    cut_at: Instant,
    /// The mirror snapshot taken during the partition.
    snap_id: u64,
}

impl CutOff {
    fn new(a: &lab::Site, b: &lab::Site, prefix: &str, from: &lab::Site, syncing: bool) -> CutOff {
        let (journal, snapshot, mut images) = two_images(a, prefix);
        // 16 MiB written, its sync capped at 1 MiB/s (about 16 s): enabled once the others
        // replay, the partition begins in the middle of its copy.
        let syncing = syncing.then(|| {
            let spec = format!("{}/{}", lab::POOL, lab::unique(&format!("{prefix}-sync")));
            a.rbd(&[
                "create",
                "--size",
                "64M",
                "--image-feature",
                "layering,exclusive-lock,journaling",
                &spec,
            ]);
            images.0.push(spec.clone());
            a.bench(&spec, "seq", "4M", "16M");
            a.rbd(&[
                "image-meta",
                "set",
                &spec,
                "rbd_mirror_rs_image_bandwidth_limit",
                &(1u64 << 20).to_string(),
            ]);
            spec
        });
        let cgroup = Cgroup::create();
        let log_from = mirror::daemon_log().len();
        let daemon = start_in(&cgroup, &[]);
        let pid = daemon_pid();
        wait_same_content(a, b, &journal);
        wait_same_content(a, b, &snapshot);
        // Replaying, not still finishing the initial sync: equal content alone raced the
        // journal image's last bootstrap step (its client state on site-a), which then
        // waited for the whole partition as `IMAGE_SYNC/COPY_IMAGE 0%`.
        wait_up_on_both(a, b, &journal);
        wait_up_on_both(a, b, &snapshot);
        let before = commit_position(a, &journal).expect("commit position");
        if let Some(spec) = &syncing {
            enable_journal_mirroring(a, spec);
            let at =
                lab::wait_for("the third image's initial sync", Duration::from_secs(60), || match statuses(
                    b, spec,
                )? {
                    ((state, d), _) if d.contains("COPY_IMAGE") => Ok(format!("{state}: {d}")),
                    (own, _) => Err(format!("{own:?}")),
                });
            println!("the partition begins with the third image at {at}");
        }

        let partition = Partition::cut(&cgroup, from);
        let cut_at = Instant::now();
        // Site-a's own traffic goes on: its clients write.
        a.bench(&journal, "rand", "4K", "4M");
        let written = cut_at.elapsed();
        a.bench(&snapshot, "rand", "4M", "16M");
        let snap_id = mirror_snapshot(a, &snapshot);
        println!(
            "during the partition, site-a's journal-image writes took {written:.1?}, the snapshot-image writes \
             and mirror snapshot {:.1?}",
            cut_at.elapsed() - written
        );
        CutOff {
            partition,
            daemon,
            cgroup,
            journal,
            snapshot,
            syncing,
            _images: images,
            log_from,
            pid,
            before,
            cut_at,
            snap_id,
        }
    }

    /// Ends the partition once it has lasted [`PARTITION`]; the packets it dropped.
    fn heal(&mut self) -> u64 {
        let dropped = self.partition.dropped();
        self.partition.heal();
        println!("packets dropped: {dropped}");
        assert!(dropped > 0, "the partition dropped nothing");
        assert!(alive(self.pid), "the daemon exited during the partition");
        dropped
    }

    /// After [`Self::heal`]: both images equal on both sites (the snapshot image up to the
    /// snapshot taken during the partition), then both sites' views of the journal image
    /// `up+replaying`; the daemon the same process, no panic in its log.
    fn recovers(self, a: &lab::Site, b: &lab::Site, healed_at: Instant) {
        wait_same_content(a, b, &self.journal);
        let journal_after = healed_at.elapsed();
        if let Some(spec) = &self.syncing {
            // Its sync goes on by itself, then its replay (no write since its sync point).
            wait_up_on_both(a, b, spec);
            wait_same_content(a, b, spec);
            println!("healed: the third image synced and up+replaying after {:.1?}", healed_at.elapsed());
        }
        wait_synced(b, &self.snapshot, self.snap_id, Duration::from_secs(180));
        wait_same_content(a, b, &self.snapshot);
        let snapshot_after = healed_at.elapsed();
        // The commit position moves on (both partitions held it).
        let moved = lab::wait_for("the commit position to move on", Duration::from_secs(60), || {
            let now = commit_position(a, &self.journal)?;
            if now != self.before {
                Ok(now)
            } else {
                Err(format!("still {now}"))
            }
        });
        // Our watches of `rbd_mirroring` timed out during the partition: `down+` until
        // they are made again.
        let up_after = wait_up_on_both(a, b, &self.journal);
        println!(
            "healed: journal image equal after {journal_after:.1?}, snapshot image (snapshot {}) after \
             {snapshot_after:.1?}, up+replaying on both sites after {up_after:.1?}; commit position {} -> {moved}",
            self.snap_id, self.before
        );
        assert_eq!(daemon_pid(), self.pid, "the daemon was restarted");
        let log = daemon_log_since(self.log_from);
        assert!(!log.contains("panicked"), "the daemon panicked: {log}");
        let CutOff { partition, daemon, cgroup, .. } = self;
        drop(partition);
        drop(daemon);
        drop(cgroup);
    }
}

/// Cut off from the peer site-a for 60 s while site-a writes to a journal-mode and a
/// snapshot-mode image: the daemon stays up, says so, and afterwards replays what was
/// written meanwhile by itself; content equal.
#[test]
fn a_partition_from_site_a_is_reported_and_replay_resumes_by_itself() {
    let (_serial, a, b) = sites();
    let mut cut = CutOff::new(&a, &b, "cut-a", &a, true);
    let (cut_at, pid) = (cut.cut_at, cut.pid);
    let mut looks = Vec::new();
    let mut syncing_looks = Vec::new();
    let mut health = None;
    let mut snapshot_silent = None;
    let label = format!("image=\"{}\"", image_name(&cut.snapshot));
    let syncing = cut.syncing.clone().expect("the syncing image");
    while cut_at.elapsed() < PARTITION {
        looks.push(look(cut_at, &a, &b, &cut.journal));
        syncing_looks.push(look(cut_at, &a, &b, &syncing));
        if snapshot_silent.is_none() {
            snapshot_silent = statuses(&b, &cut.snapshot)
                .ok()
                .filter(|((_, description), _)| description.contains("primary_unreachable_seconds"))
                .map(|(own, _)| (cut_at.elapsed(), own, b.metric("rbd_mirror_rs_image_lag_seconds", &label)));
        }
        assert!(alive(pid), "the daemon exited during the partition");
        if health.is_none() {
            let pool = bounded(&b, 10, "rbd", &["mirror", "pool", "status", lab::POOL, "--verbose"]);
            health = pool.ok().filter(|p| p.contains("mirror_peer_ping")).map(|p| (cut_at.elapsed(), p));
        }
        std::thread::sleep(Duration::from_secs(5));
    }
    cut.heal();
    let healed_at = Instant::now();
    print_looks("journal image during the partition from site-a:", &looks);
    print_looks("journal image in its initial sync during the partition from site-a:", &syncing_looks);
    // The pool's health (service map) names the silent peer.
    let (at, pool) =
        health.expect("`rbd mirror pool status --verbose` on site-b never named the silent peer");
    let callout =
        pool.lines().filter(|l| l.contains("mirror_peer_ping") || l.contains("health")).collect::<Vec<_>>();
    println!("{at:.1?} into the partition, rbd mirror pool status --verbose on site-b: {callout:?}");
    // Site-a's view: our watch of its `rbd_mirroring` timed out, so `down+`.
    assert!(looks.iter().any(|l| l.peer.starts_with("down+")), "site-a never showed site-b down");
    // Site-b's status and lag: the primary does not answer (a read of its journal waits).
    let silent = looks.iter().find(|l| l.status.contains("primary_unreachable_seconds"));
    let silent = silent.expect("site-b's status never said that the primary does not answer");
    assert!(
        silent.lag.is_some_and(|lag| lag >= 10.0),
        "lag_seconds {:?} while the primary was silent",
        silent.lag
    );
    println!("{:.0} s into the partition, site-b's status: {}", silent.at, silent.status);
    // The image in its initial sync: still syncing, and the status says why it does not
    // move on.
    let silent = syncing_looks.iter().find(|l| l.status.contains("primary_unreachable_seconds"));
    let silent = silent
        .expect("the status of the image in its initial sync never said that the primary does not answer");
    assert!(silent.status.starts_with("up+syncing"), "{}", silent.status);
    println!("{:.0} s into the partition, the image in its initial sync: {}", silent.at, silent.status);
    // The snapshot-mode image too (the pool's pings go unanswered: at most the ping
    // interval, 30 s, + their 10 s timeout into the partition).
    let (at, (state, description), lag) = snapshot_silent
        .expect("site-b's status of the snapshot-mode image never said that the primary does not answer");
    println!(
        "{at:.1?} into the partition, the snapshot-mode image: {state}: {description}; lag_seconds {lag:?}"
    );
    assert!(
        lag.is_some_and(|lag| lag > 0.0),
        "lag_seconds {lag:?} of the snapshot-mode image while the primary was silent"
    );
    cut.recovers(&a, &b, healed_at);
}

/// Cut off from its own cluster site-b for 60 s while site-a writes: the daemon stays up
/// (its `/metrics` answer throughout, the lag growing), and afterwards writes what it could
/// not and publishes its status again by itself; content equal.
#[test]
fn a_partition_from_site_b_is_reported_and_replay_resumes_by_itself() {
    let (_serial, a, b) = sites();
    let mut cut = CutOff::new(&a, &b, "cut-b", &b, false);
    let mut looks = Vec::new();
    while cut.cut_at.elapsed() < PARTITION {
        looks.push(look(cut.cut_at, &a, &b, &cut.journal));
        assert!(alive(cut.pid), "the daemon exited during the partition");
        std::thread::sleep(Duration::from_secs(5));
    }
    let held = commit_position(&a, &cut.journal).expect("commit position");
    cut.heal();
    let healed_at = Instant::now();
    print_looks("journal image during the partition from site-b:", &looks);
    println!("commit position before {}, at the end of the partition {held}", cut.before);
    // Site-b: our watch of its `rbd_mirroring` timed out, so `down+`; `/metrics` (local)
    // answered at every look.
    assert!(looks.iter().any(|l| l.status.starts_with("down+")), "site-b never showed its daemon down");
    // The lag metric went on growing while replay waited for site-b (written at the start
    // of the partition, the entries are older than 30 s at its end).
    let last = looks.last().expect("looks");
    assert!(
        last.lag.is_some_and(|lag| lag >= 30.0),
        "lag_seconds {:?} {:.0} s into the partition from site-b",
        last.lag,
        last.at
    );
    cut.recovers(&a, &b, healed_at);
}

/// A site's OSD stopped (`lab.sh osd-stop`) for the life of the guard; started again on
/// drop unless [`OsdStopped::start`] did.
struct OsdStopped {
    site: &'static str,
    started: bool,
}

impl OsdStopped {
    fn stop(site: &'static str) -> OsdStopped {
        let stopped = OsdStopped { site, started: false };
        lab::lab_script(&["osd-stop", site], &[]);
        stopped
    }

    /// Starts it and waits until its placement groups are active.
    fn start(&mut self) {
        if !self.started {
            self.started = true;
            lab::lab_script(&["osd-start", self.site], &[]);
        }
    }
}

impl Drop for OsdStopped {
    fn drop(&mut self) {
        if !self.started {
            if let Err(e) = lab::try_lab_script(&["osd-start", self.site], &[]) {
                eprintln!("starting {}'s OSD again: {e}", self.site);
            }
        }
    }
}

/// Site-b's non-primary snapshot of primary snapshot `primary` of `spec`: (complete,
/// `last_copied_object_number`), as `rbd snap ls --all` shows it (bounded to 10 s).
fn sync_progress(b: &lab::Site, spec: &str, primary: u64) -> Option<(bool, u64)> {
    let listed = bounded(b, 10, "rbd", &["snap", "ls", "--all", spec, "--format", "json"]).ok()?;
    let listed: Vec<Value> = serde_json::from_str(&listed).ok()?;
    listed.iter().map(|s| &s["namespace"]).find_map(|ns| {
        (ns["type"] == "mirror" && ns["primary_snap_id"].as_u64() == Some(primary))
            .then(|| (ns["complete"] == true, ns["last_copied_object_number"].as_u64().unwrap_or(0)))
    })
}

/// Site-a's OSD stopped for 20 s in the middle of the full sync of a 512 MiB snapshot-mode
/// image (128 objects, all written; the sync capped at 16 MiB/s so that it lasts about
/// 30 s): the sync waits, then goes on from its recorded progress (never back to object 0:
/// the progress site-b records never goes back, the copy's log line starts at or after the
/// progress recorded before the stop), one full sync in all; content equal.
#[test]
fn site_a_osd_stopped_during_a_full_sync_resumes_it_from_its_progress() {
    let (_serial, a, b) = sites();
    let spec = format!("{}/{}", lab::POOL, lab::unique("osd-a"));
    a.rbd(&["create", "--size", "512M", &spec]);
    let _images = Images(vec![spec.clone()]);
    a.bench(&spec, "seq", "4M", "512M");
    a.rbd(&["image-meta", "set", &spec, "rbd_mirror_rs_image_bandwidth_limit", &(16u64 << 20).to_string()]);
    let objects = 128;
    let first = enable_snapshot_mirroring(&a, &spec);
    let primary = a.export_sha256(&spec);
    let log_from = mirror::daemon_log().len();
    let _daemon = Daemon::start();
    let pid = daemon_pid();
    let sync_started = Instant::now();
    let at_stop =
        lab::wait_for(
            "the full sync to record 24 objects",
            Duration::from_secs(120),
            || match sync_progress(&b, &spec, first) {
                Some((false, n)) if n >= 24 => Ok(n),
                other => Err(format!("{other:?}")),
            },
        );
    let mut osd = OsdStopped::stop("site-a");
    let stopped_at = Instant::now();
    println!(
        "site-a's OSD stopped {:.1?} into the sync, recorded progress {at_stop} of {objects} objects",
        sync_started.elapsed()
    );
    let mut looks = Vec::new();
    let mut progress = vec![(0.0, at_stop)];
    while stopped_at.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_secs(4));
        let status =
            statuses(&b, &spec).map(|(own, _)| format!("{}: {}", own.0, own.1)).unwrap_or_else(|e| e);
        let n = sync_progress(&b, &spec, first).map_or(0, |(_, n)| n);
        looks.push((stopped_at.elapsed().as_secs_f64(), n, status));
        progress.push((stopped_at.elapsed().as_secs_f64(), n));
        assert!(alive(pid), "the daemon exited while site-a's OSD was down");
    }
    osd.start();
    let started_at = Instant::now();
    println!("site-a's OSD started again after {:.1?}", stopped_at.elapsed());
    lab::wait_for("the full sync to complete", Duration::from_secs(240), || {
        let now = sync_progress(&b, &spec, first);
        if let Some((_, n)) = now {
            progress.push((stopped_at.elapsed().as_secs_f64(), n));
        }
        match now {
            Some((true, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let completed_after = started_at.elapsed();
    println!("\nwhile site-a's OSD was down (s after the stop, recorded progress, site-b's status):");
    for (at, n, status) in &looks {
        println!("| {at:.0} | {n} | {status} |");
    }
    let recorded: Vec<u64> = progress.iter().map(|&(_, n)| n).collect();
    println!("recorded progress over time (objects): {recorded:?}; complete {completed_after:.1?} after the OSD start");
    // The progress never goes back (a copy from object 0 would record from 0 again).
    assert!(recorded.windows(2).all(|w| w[0] <= w[1]), "the recorded progress went back: {recorded:?}");
    let log = daemon_log_since(log_from);
    // Each (re)start of the copy logs where it starts: only object 0 at the first, then at
    // or after the progress recorded before the stop.
    let starts: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("resuming the interrupted snapshot sync"))
        .map(|l| mirror::log_field(l, "start_object"))
        .collect();
    let done = log.lines().find(|l| l.contains("image copy done")).expect("no 'image copy done' in the log");
    println!("resumed at objects {starts:?}; {done}");
    // The copy that completed covered the image once from where it (re)started.
    let (start, copied) =
        (mirror::log_field(done, "start_object"), mirror::log_field(done, "objects_copied"));
    assert_eq!(start + copied, objects, "{done}");
    assert!(
        starts.iter().all(|&s| s >= at_stop),
        "a resume before the recorded progress {at_stop}: {starts:?}"
    );
    let syncs = log.lines().filter(|l| l.contains("syncing snapshot")).count();
    assert_eq!(syncs, 1 + starts.len(), "syncs started: {log}");
    wait_same_content(&a, &b, &spec);
    assert_eq!(b.export_sha256(&spec), primary);
    let full = b.metric("rbd_mirror_rs_image_full_syncs", &format!("image=\"{}\"", image_name(&spec)));
    println!("full syncs: {full:?}; sha256 {primary} on both sites");
    assert_eq!(daemon_pid(), pid, "the daemon was restarted");
    assert!(!log.contains("panicked"), "the daemon panicked");
}

/// Site-b's OSD stopped for 20 s during journal replay (a backlog of 4 KiB writes replayed
/// at the image's 2 MiB/s cap) while site-a writes 4 MiB more: the daemon stays up, commits
/// nothing it could not write (the commit position on site-a holds while the OSD is down),
/// and afterwards replays everything by itself: content equal, position moved on.
#[test]
fn site_b_osd_stopped_during_journal_replay_loses_nothing() {
    let (_serial, a, b) = sites();
    let (spec, _images) = journaling_image(&a, "osd-b", "64M", "layering,exclusive-lock,journaling");
    a.rbd(&["image-meta", "set", &spec, "rbd_mirror_rs_image_bandwidth_limit", &(2u64 << 20).to_string()]);
    enable_journal_mirroring(&a, &spec);
    let log_from = mirror::daemon_log().len();
    let _daemon = Daemon::start();
    let pid = daemon_pid();
    wait_same_content(&a, &b, &spec);
    let before = commit_position(&a, &spec).expect("commit position");
    // A backlog of 16 MiB: about 8 s of replay at the cap.
    a.bench(&spec, "rand", "4K", "16M");
    lab::wait_for("replay under way", Duration::from_secs(60), || {
        let now = commit_position(&a, &spec)?;
        if now != before {
            Ok(())
        } else {
            Err(format!("still {now}"))
        }
    });
    let mut osd = OsdStopped::stop("site-b");
    let stopped_at = Instant::now();
    // Site-a's clients go on writing.
    a.bench(&spec, "rand", "4K", "4M");
    let primary = a.export_sha256(&spec);
    let mut looks = Vec::new();
    // Once the writes in flight at the stop have settled, nothing more is committed.
    std::thread::sleep(Duration::from_secs(3));
    let held = commit_position(&a, &spec).expect("commit position");
    while stopped_at.elapsed() < Duration::from_secs(20) {
        looks.push(look(stopped_at, &a, &b, &spec));
        assert!(alive(pid), "the daemon exited while site-b's OSD was down");
        std::thread::sleep(Duration::from_secs(4));
    }
    let still = commit_position(&a, &spec).expect("commit position");
    osd.start();
    let started_at = Instant::now();
    print_looks("while site-b's OSD was down:", &looks);
    println!(
        "commit position before the backlog {before}, 3 s after the stop {held}, at the OSD start {still}"
    );
    assert_eq!(held, still, "the commit position moved while site-b's OSD was down");

    wait_same_content(&a, &b, &spec);
    assert_eq!(b.export_sha256(&spec), primary);
    let equal_after = started_at.elapsed();
    let moved = lab::wait_for("the commit position to move on", Duration::from_secs(60), || {
        let now = commit_position(&a, &spec)?;
        if now != still {
            Ok(now)
        } else {
            Err(format!("still {now}"))
        }
    });
    println!("equal {equal_after:.1?} after the OSD start (sha256 {primary}); commit position now {moved}");
    assert_eq!(daemon_pid(), pid, "the daemon was restarted");
    assert!(!daemon_log_since(log_from).contains("panicked"), "the daemon panicked");
}
