//! Issue 20, faults: `kill -9` storms during journal replay and during a snapshot sync, and
//! bad input on the primary (what a journal or a pool's records may hold that does not
//! decode), each against `rbd-mirror-rs` at site-b of the lab, checked with the stock CLIs.
//!
//! The storms kill the daemon `RBD_MIRROR_FAULT_KILLS` times (default 5, the CI form; 20 by
//! hand: `RBD_MIRROR_FAULT_KILLS=20 cargo test -p daemon --test fault_storms -- --nocapture
//! storm`) at random moments, and print a table of the kills.

#[path = "../../../tests/support/lab.rs"]
mod lab;
#[path = "support/mirror.rs"]
mod mirror;

use std::time::{Duration, Instant};

use mirror::{
    daemon_log, daemon_log_since, enable_snapshot_mirroring, image_id, image_name, image_status,
    journaling_image, kill_9_daemon, log_field, mirror_snapshot, mirrored_journal_image, sites,
    wait_image_status, wait_same_content, wait_status, wait_synced, Daemon, Images,
};
use serde_json::Value;

/// Each restart of a storm is a new instance that must first take the dead one's leader
/// lock and release its images (ha.rs tests that at stock timings: about 50 s); here it
/// takes a few seconds: heartbeats every second, the lock broken after one missed
/// heartbeat and one failed attempt; the dead instances' blocklist entries expire after
/// two minutes.
const QUICK_TAKEOVER: &[&str] = &[
    "--rbd_mirror_leader_heartbeat_interval",
    "1",
    "--rbd_mirror_leader_max_missed_heartbeats",
    "1",
    "--rbd_mirror_leader_max_acquire_attempts_before_break",
    "1",
    "--rbd_blocklist_expire_seconds",
    "120",
];

/// How many times a storm kills the daemon.
fn kills() -> usize {
    std::env::var("RBD_MIRROR_FAULT_KILLS").ok().and_then(|n| n.parse().ok()).unwrap_or(5)
}

/// A small xorshift generator: the delays of a storm, reproducible from the printed seed
/// (`RBD_MIRROR_FAULT_SEED`).
struct Random(u64);

impl Random {
    fn new() -> Random {
        let seed =
            std::env::var("RBD_MIRROR_FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        println!("storm seed {seed} (RBD_MIRROR_FAULT_SEED={seed} repeats these delays)");
        Random(seed | 1)
    }

    /// A delay of `min` up to `min + spread`.
    fn delay(&mut self, min: Duration, spread: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        min + spread.mul_f64((self.0 % 1000) as f64 / 1000.0)
    }
}

/// Waits (2 min at most) until the site-b daemon's log after its first `from` bytes has a
/// line containing `needle`; returns it (the status of `spec` on failure).
fn wait_logged(b: &lab::Site, spec: &str, from: usize, needle: &str) -> String {
    lab::wait_for(&format!("{needle:?} in the log"), Duration::from_secs(120), || {
        let log = daemon_log_since(from);
        match log.lines().find(|l| l.contains(needle)) {
            Some(line) => Ok(line.to_owned()),
            None => Err(image_status(b, spec).map(|s| format!("{s:?}")).unwrap_or_else(|e| e)),
        }
    })
}

/// One life of the daemon in a storm, ready for its kill.
struct Life {
    daemon: Daemon,
    /// Where its log starts in the daemon's log file.
    log_from: usize,
    /// From its start until the awaited line was logged.
    until_logged: Duration,
    /// How long it then ran before the kill.
    delay: Duration,
}

/// Starts the daemon (quick takeover), waits until its log has a line containing `needle`,
/// then lets it run a random 0.3-3.3 s.
fn start_and_wait(b: &lab::Site, spec: &str, needle: &str, random: &mut Random) -> Life {
    let log_from = daemon_log().len();
    let started = Instant::now();
    let daemon = Daemon::start_with(QUICK_TAKEOVER);
    wait_logged(b, spec, log_from, needle);
    let until_logged = started.elapsed();
    let delay = random.delay(Duration::from_millis(300), Duration::from_secs(3));
    std::thread::sleep(delay);
    Life { daemon, log_from, until_logged, delay }
}

/// The commit position of journal client `client` of `spec`'s journal on `a` (`rbd journal
/// status`): (tag tid, the newest entry tid of its object positions).
fn commit_position(a: &lab::Site, spec: &str, client: &str) -> (u64, u64) {
    let status = a.rbd_json(&["journal", "status", "--pool", lab::POOL, "--image", image_name(spec)]);
    let clients = status["registered_clients"].as_array().cloned().unwrap_or_default();
    let c = clients
        .iter()
        .find(|c| c["id"] == client)
        .unwrap_or_else(|| panic!("no client {client:?}: {status}"));
    let positions = c["commit_position"]["object_positions"].as_array().cloned().unwrap_or_default();
    positions
        .iter()
        .map(|p| (p["tag_tid"].as_u64().unwrap_or(0), p["entry_tid"].as_u64().unwrap_or(0)))
        .max()
        .unwrap_or((0, 0))
}

/// Site-b's mirror uuid: the id of our journal client on site-a's journals.
fn local_mirror_uuid(b: &lab::Site) -> String {
    let out = b.rados(&["-p", lab::POOL, "getomapval", "rbd_mirroring", "mirror_uuid", "/dev/stdout"]);
    out.trim().to_owned()
}

/// `kill -9` of the site-b daemon `storm` times while it replays a journal backlog of
/// site-a (capped at 2 MiB/s by the image's own bandwidth limit so that replay lasts
/// through the storm), at a random moment 0.3-3.3 s after each restart began replaying.
/// After each restart the log says replay resumed from the committed position and
/// `/metrics` counts no full sync; site-b's image is never recreated; the content ends
/// equal. Each kill's staleness: the entries applied before the kill but not yet in the
/// committed position (replayed again after the restart).
#[test]
fn kill_9_storm_during_journal_replay() {
    let (_serial, a, b) = sites();
    let storm = kills();
    let (spec, _images) = journaling_image(&a, "storm-journal", "64M", "layering,exclusive-lock,journaling");
    mirror::enable_journal_mirroring(&a, &spec);
    let daemon = Daemon::start_with(QUICK_TAKEOVER);
    wait_status(&b, &spec, "up+replaying", "");
    drop(daemon);
    // Read when a replay starts: every restart of the storm replays at 2 MiB/s.
    a.rbd(&["image-meta", "set", &spec, "rbd_mirror_rs_image_bandwidth_limit", "2M"]);
    let local_id = image_id(&b, &spec);

    // About 3 s of replay per kill at 2 MiB/s, in 4 KiB writes, written while no daemon runs.
    let backlog = format!("{}M", 8 + storm * 6);
    let started = Instant::now();
    a.bench(&spec, "rand", "4K", &backlog);
    println!("backlog {backlog} of 4 KiB writes written in {:.0?}", started.elapsed());
    let client = local_mirror_uuid(&b);
    let name = image_name(&spec);
    let label = format!("image=\"{name}\"");
    let mut random = Random::new();
    let mut rows = Vec::new();
    for kill in 1..=storm {
        let (_, start) = commit_position(&a, &spec, &client);
        let Life { daemon, log_from, until_logged: resumed_after, delay } =
            start_and_wait(&b, &spec, "replaying from the committed position", &mut random);
        let applied = b.metric("ceph_rbd_mirror_image_replay", &label).unwrap_or(0.0) as u64;
        let full_syncs = b.metric("rbd_mirror_rs_image_full_syncs", &label).unwrap_or(0.0);
        let resumed = b.metric("rbd_mirror_rs_image_replay_resumed", &label).unwrap_or(0.0);
        let pid = kill_9_daemon();
        drop(daemon);
        let (_, committed) = commit_position(&a, &spec, &client);
        let (_, head) = commit_position(&a, &spec, "");
        let log = daemon_log_since(log_from);
        assert!(log.contains("resumed=true"), "kill {kill}: replay did not resume: {log}");
        assert!(!log.contains("initial sync complete"), "kill {kill}: a full sync ran: {log}");
        assert_eq!(full_syncs, 0.0, "kill {kill}: rbd_mirror_rs_image_full_syncs");
        assert_eq!(resumed, 1.0, "kill {kill}: rbd_mirror_rs_image_replay_resumed");
        assert_eq!(image_id(&b, &spec), local_id, "kill {kill}: site-b's image was recreated");
        assert!(committed >= start, "kill {kill}: the commit position went back from {start} to {committed}");
        // Entry tids of one tag are consecutive: the entries applied are start+1 ..= start+applied.
        let stale = (start + applied).saturating_sub(committed);
        rows.push((
            kill,
            pid,
            resumed_after,
            delay,
            start,
            applied,
            committed,
            stale,
            head.saturating_sub(committed),
        ));
    }

    a.rbd(&["image-meta", "remove", &spec, "rbd_mirror_rs_image_bandwidth_limit"]);
    let log_from = daemon_log().len();
    let _daemon = Daemon::start_with(QUICK_TAKEOVER);
    let started = Instant::now();
    wait_same_content(&a, &b, &spec);
    let log = daemon_log_since(log_from);
    assert!(!log.contains("initial sync complete"), "a full sync ran at the end: {log}");
    assert_eq!(b.metric("rbd_mirror_rs_image_full_syncs", &label).unwrap_or(0.0), 0.0);
    assert_eq!(image_id(&b, &spec), local_id, "site-b's image was recreated");
    println!(
        "\n{storm} kills during journal replay of {spec} ({backlog} backlog, 4 KiB writes, 2 MiB/s cap):"
    );
    println!(
        "| kill | pid | replaying after start | killed after | position at start | applied | committed at kill | \
         stale (replayed again) | behind primary |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (kill, pid, resumed, delay, start, applied, committed, stale, behind) in &rows {
        println!(
            "| {kill} | {pid} | {resumed:.1?} | {delay:.1?} | {start} | {applied} | {committed} | {stale} | {behind} |"
        );
    }
    let stale: Vec<u64> = rows.iter().map(|r| r.7).collect();
    println!(
        "staleness: max {} entries, mean {:.0}; no full sync (log, rbd_mirror_rs_image_full_syncs 0 after each \
         restart); site-b image id {local_id} kept; sha256 equal {:.0?} after the last restart",
        stale.iter().max().unwrap_or(&0),
        stale.iter().sum::<u64>() as f64 / stale.len().max(1) as f64,
        started.elapsed()
    );
}

/// Site-b's non-primary mirror snapshot of `spec` for primary snapshot `primary`: (complete,
/// last copied object number); `None` before site-b has the image or that snapshot.
fn non_primary(b: &lab::Site, spec: &str, primary: u64) -> Option<(bool, u64)> {
    mirror_namespaces(b, spec).into_iter().find_map(|ns| {
        (ns["primary_snap_id"].as_u64() == Some(primary))
            .then(|| (ns["complete"] == true, ns["last_copied_object_number"].as_u64().unwrap_or(0)))
    })
}

/// Whether site-b's copy of `spec` has a complete non-primary mirror snapshot.
fn complete_non_primary(b: &lab::Site, spec: &str) -> bool {
    mirror_namespaces(b, spec).iter().any(|ns| ns["complete"] == true)
}

/// The namespaces of the mirror snapshots of site-b's copy of `spec` (`rbd snap ls
/// --all`); none before site-b has the image.
fn mirror_namespaces(b: &lab::Site, spec: &str) -> Vec<Value> {
    let listed =
        b.command_output("rbd", &["snap", "ls", "--all", spec, "--format", "json"]).unwrap_or_default();
    let listed: Vec<Value> = serde_json::from_str(&listed).unwrap_or_default();
    listed.into_iter().map(|s| s["namespace"].clone()).filter(|ns| ns["type"] == "mirror").collect()
}

/// How many data objects of site-b's image `local_id` have an object number of `from` or
/// more (`rados ls`).
fn data_objects_from(b: &lab::Site, local_id: &str, from: u64) -> usize {
    let prefix = format!("rbd_data.{local_id}.");
    let listed = b.rados(&["-p", lab::POOL, "ls"]);
    listed
        .lines()
        .filter_map(|o| o.strip_prefix(&prefix))
        .filter_map(|n| u64::from_str_radix(n, 16).ok())
        .filter(|&n| n >= from)
        .count()
}

/// `kill -9` of the site-b daemon `storm` times during the snapshot syncs of a 256 MiB
/// image (the full sync first, capped by the image's own bandwidth limit so that it lasts
/// through about half the kills; when a sync has finished, 32 MiB more are written and a mirror
/// snapshot taken, so each kill lands in a sync), at a random moment 0.3-3.3 s after each
/// restart began syncing. After each restart the interrupted sync resumes from its
/// recorded progress (log) and never restarts at object 0 once progress was recorded, nor
/// is any sync a full one once site-b has a complete snapshot;
/// site-b's image is never recreated; the content ends equal. Each kill's staleness: the
/// objects copied before the kill but not yet recorded in the non-primary snapshot.
#[test]
fn kill_9_storm_during_snapshot_sync() {
    let (_serial, a, b) = sites();
    let storm = kills();
    let spec = format!("{}/{}", lab::POOL, lab::unique("storm-snap"));
    a.rbd(&["create", "--size", "256M", &spec]);
    let _images = Images(vec![spec.clone()]);
    a.bench(&spec, "seq", "4M", "256M");
    // The full sync lasts for about half the storm (it copies at about half the cap between
    // restarts), snapshot syncs of 32 MiB the other half.
    let cap = (256 << 20) / (storm as u64 / 2 + 2);
    a.rbd(&["image-meta", "set", &spec, "rbd_mirror_rs_image_bandwidth_limit", &cap.to_string()]);
    let objects = 64;
    let first = enable_snapshot_mirroring(&a, &spec);
    let mut primary = first;
    let mut random = Random::new();
    let mut rows = Vec::new();
    let mut local_id = None;
    let mut full_syncs = 0.0;
    for kill in 1..=storm {
        let before = non_primary(&b, &spec, primary);
        if before.is_some_and(|(complete, _)| complete) {
            a.bench(&spec, "rand", "4M", "32M");
            primary = mirror_snapshot(&a, &spec);
        }
        let recorded_before = non_primary(&b, &spec, primary).map(|(_, n)| n);
        let had_base = complete_non_primary(&b, &spec);
        // This daemon's sync started (the status may still be the killed one's).
        let Life { daemon, log_from, until_logged: syncing_after, delay } =
            start_and_wait(&b, &spec, "syncing snapshot", &mut random);
        full_syncs += b
            .metric("rbd_mirror_rs_image_full_syncs", &format!("image=\"{}\"", image_name(&spec)))
            .unwrap_or(0.0);
        let pid = kill_9_daemon();
        drop(daemon);
        let after = non_primary(&b, &spec, primary);
        let log = daemon_log_since(log_from);
        let resume = log.lines().find(|l| l.contains("resuming the interrupted snapshot sync"));
        // With a complete snapshot at site-b, every sync is a delta sync from one.
        if had_base {
            let full = log.lines().find(|l| l.contains("syncing snapshot remote_snap_id_start=None"));
            assert!(full.is_none(), "kill {kill}: a full sync after the restart: {full:?}");
        }
        match recorded_before {
            // An interrupted sync of this primary snapshot with progress: resumed there.
            Some(recorded) if recorded > 0 => {
                let line = resume
                    .unwrap_or_else(|| panic!("kill {kill}: the interrupted sync did not resume: {log}"));
                assert_eq!(log_field(line, "start_object"), recorded, "kill {kill}: {line}");
            }
            // Killed before its first progress record: as stock (`Replayer::scan_local_mirror_
            // snapshots`), resumed from object 0 if it is the first non-primary snapshot,
            // else made again (it may lack its image state) from the snapshot before it.
            Some(_) => assert!(
                resume.is_some_and(|l| log_field(l, "start_object") == 0)
                    || (had_base && log.contains("pruning non-primary snapshot")),
                "kill {kill}: a sync without progress: {log}"
            ),
            None => {}
        }
        let id = image_id(&b, &spec);
        assert_eq!(
            *local_id.get_or_insert_with(|| id.clone()),
            id,
            "kill {kill}: site-b's image was recreated"
        );
        let complete = after.is_some_and(|(c, _)| c);
        // During the full sync (every primary object is written), the objects site-b has
        // beyond the recorded progress were copied but not recorded: they are copied again.
        let recorded = after.map_or(0, |(_, n)| n);
        let stale = (primary == first && !complete).then(|| data_objects_from(&b, &id, recorded));
        rows.push((kill, pid, syncing_after, delay, primary, recorded_before, after, stale));
    }
    assert!(full_syncs <= 1.0, "rbd_mirror_rs_image_full_syncs summed over the storm: {full_syncs}");

    a.rbd(&["image-meta", "remove", &spec, "rbd_mirror_rs_image_bandwidth_limit"]);
    let _daemon = Daemon::start_with(QUICK_TAKEOVER);
    let started = Instant::now();
    wait_synced(&b, &spec, primary, Duration::from_secs(300));
    let (sa, sb) = (a.export_sha256(&spec), b.export_sha256(&spec));
    assert_eq!(sa, sb, "rbd export {spec} | sha256sum differs between the sites");
    assert_eq!(local_id.as_deref(), Some(image_id(&b, &spec).as_str()), "site-b's image was recreated");
    println!(
        "\n{storm} kills during the snapshot syncs of {spec} (256 MiB, {objects} objects, cap {cap} B/s; \
         progress reported every 1 s or 64 objects):"
    );
    println!(
        "| kill | pid | syncing after start | killed after | primary snap | recorded at start | \
         recorded after kill | stale objects (copied, not recorded) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let show = |n: Option<u64>| n.map_or("-".to_owned(), |n| n.to_string());
    for (kill, pid, syncing, delay, snap, before, after, stale) in &rows {
        let after = match after {
            Some((true, _)) => "complete".to_owned(),
            Some((false, n)) => n.to_string(),
            None => "-".to_owned(),
        };
        let stale = show(stale.map(|n| n as u64));
        println!(
            "| {kill} | {pid} | {syncing:.1?} | {delay:.1?} | {snap} | {} | {after} | {stale} |",
            show(*before)
        );
    }
    println!(
        "full syncs counted over the storm: {full_syncs}; site-b image id kept; sha256 {sa} on both sites, \
         {:.0?} after the last restart",
        started.elapsed()
    );
    // The status is healthy afterwards.
    wait_image_status(&b, &spec, "replaying", Duration::from_secs(60), |s, _| s == "up+replaying");
}

// ---------------------------------------------------------------------------------------
// Bad input: each case damages one image (or one record) on a cluster; that one errors with
// a clear status (or is handled as stock handles it), the others go on, nothing panics.

/// A victim and a healthy journal-mode image of site-a, both replaying at site-b; the
/// daemon stopped again; then 16 writes of 4 KiB to the victim, whose newest journal entry
/// is returned.
fn victim_and_healthy_journal_images(
    a: &lab::Site,
    b: &lab::Site,
    case: &str,
) -> ([(String, Images); 2], mirror::JournalEntryAt) {
    let victim = mirrored_journal_image(a, &format!("{case}-victim"));
    let healthy = mirrored_journal_image(a, &format!("{case}-healthy"));
    let daemon = Daemon::start();
    for (spec, _) in [&victim, &healthy] {
        wait_status(b, spec, "up+replaying", "");
    }
    drop(daemon);
    a.bench(&victim.0, "seq", "4K", "64K");
    let newest = mirror::newest_journal_entry(a, &victim.0);
    ([victim, healthy], newest)
}

/// The healthy image goes on: new writes replicate, its status `up+replaying`; the daemon
/// never panicked.
fn healthy_goes_on(a: &lab::Site, b: &lab::Site, spec: &str, log_from: usize) {
    a.bench(spec, "rand", "4K", "1M");
    wait_same_content(a, b, spec);
    assert_eq!(image_status(b, spec).expect("status").0, "up+replaying");
    let log = daemon_log_since(log_from);
    assert!(!log.contains("panicked"), "the daemon panicked: {log}");
    println!("{spec}: the other image replicated (sha256 equal on both sites, up+replaying)");
}

/// Starts the daemon and waits (2 min at most) until `victim` is `up+error` at site-b: the
/// guard, where its log starts, the status description.
fn start_until_error(b: &lab::Site, victim: &str) -> (Daemon, usize, String) {
    let log_from = daemon_log().len();
    let daemon = Daemon::start();
    let (_, description) =
        wait_image_status(b, victim, "the victim in error", Duration::from_secs(120), |s, _| s == "up+error");
    println!("site-b {victim}: up+error, {description}");
    (daemon, log_from, description)
}

/// librbd's event type of an `AioWrite`; and one no release defines.
const AIO_WRITE: u32 = 1;
const UNKNOWN_EVENT_TYPE: u32 = 99;

/// A well-formed journal entry (good CRC) of an event type no release defines. As librbd's
/// replay (`EventEntry` decodes it as `UnknownEvent`, whose replay does nothing and
/// commits), the daemon skips it with a warning naming it and goes on: the image stays
/// `up+replaying`, the entries after it are applied.
#[test]
fn an_unknown_journal_event_type_is_skipped_as_librbd_does() {
    let (_serial, a, b) = sites();
    let ([(victim, _v), (healthy, _h)], entry) = victim_and_healthy_journal_images(&a, &b, "unknown-event");
    // Turn the newest write into an event of type 99: the payload starts with the
    // `EventEntry` envelope (struct_v, compat, u32 length), then the u32 event type.
    let mut bytes = mirror::object_read(&a, &entry.object, entry.offset as u64, entry.len);
    let at = 29 + 6;
    assert_eq!(bytes[at..at + 4], AIO_WRITE.to_le_bytes(), "{entry:?} is an AioWrite");
    bytes[at..at + 4].copy_from_slice(&UNKNOWN_EVENT_TYPE.to_le_bytes());
    let crc_at = entry.len - 4;
    let crc = rbd_types::ceph_crc32c(0, &bytes[..crc_at]);
    bytes[crc_at..].copy_from_slice(&crc.to_le_bytes());
    mirror::object_write(&a, &entry.object, entry.offset as u64, &bytes);
    println!(
        "entry tid {} at {} offset {}: event type {UNKNOWN_EVENT_TYPE}, CRC {crc:#010x}",
        entry.entry_tid, entry.object, entry.offset
    );

    let log_from = daemon_log().len();
    let _daemon = Daemon::start();
    let skipped = wait_logged(&b, &victim, log_from, "unknown type");
    println!("logged: {skipped}");
    assert!(
        skipped.contains("WARN") && skipped.contains(&format!("event_type={UNKNOWN_EVENT_TYPE}")),
        "{skipped}"
    );
    assert!(skipped.contains(&format!("entry_tid={}", entry.entry_tid)), "{skipped}");
    // Replay went past it: committed up to the primary's newest entry.
    let client = local_mirror_uuid(&b);
    lab::wait_for("the entry committed", Duration::from_secs(60), || {
        let (_, committed) = commit_position(&a, &victim, &client);
        let (_, head) = commit_position(&a, &victim, "");
        if committed >= head {
            Ok(())
        } else {
            Err(format!("committed {committed}, primary {head}"))
        }
    });
    let (state, description) = image_status(&b, &victim).expect("status");
    assert_eq!(state, "up+replaying", "{description}");
    // The skipped write is the one difference; writes after it replicate.
    assert_ne!(a.export_sha256(&victim), b.export_sha256(&victim), "the unknown event was not applied");
    a.bench(&victim, "seq", "4K", "64K");
    wait_same_content(&a, &b, &victim);
    println!("{victim}: up+replaying past the unknown event; later writes replicate");
    healthy_goes_on(&a, &b, &healthy, log_from);
}

/// A journal data object cut short in the middle of its newest entry (`rados truncate`):
/// librbd appends whole entries, so this is damage, not an append in progress. That image
/// goes `up+error` naming the object and the offset of the partial entry (it used to wait
/// for the rest of the entry, `up+replaying`, for ever); the other image goes on.
#[test]
fn a_truncated_journal_object_stops_only_its_image() {
    let (_serial, a, b) = sites();
    let ([(victim, _v), (healthy, _h)], entry) = victim_and_healthy_journal_images(&a, &b, "truncated");
    let cut = entry.offset + 40;
    a.rados(&["-p", lab::POOL, "truncate", &entry.object, &cut.to_string()]);
    println!("{} truncated to {cut} bytes, inside the entry at offset {}", entry.object, entry.offset);

    let (_daemon, log_from, description) = start_until_error(&b, &victim);
    assert!(
        description.contains("truncated journal object") && description.contains(&entry.object),
        "{description}"
    );
    assert!(description.contains(&format!("offset {}", entry.offset)), "{description}");
    healthy_goes_on(&a, &b, &healthy, log_from);
}

/// The omap record `snapshot_<id>` of a primary mirror snapshot in `rbd_header.<id>` of
/// site-a, cut inside its snapshot namespace so that it no longer decodes (cls `rbd`
/// refuses such bytes through `snapshot_add`; written with `rados setomapval`, the original
/// put back at the end). That image errors with a clear status naming the snapshot; the
/// other snapshot-mode image goes on.
#[test]
fn a_mirror_snapshot_whose_namespace_does_not_decode_stops_only_its_image() {
    let (_serial, a, b) = sites();
    let (victim, healthy) = (lab::unique("garbage-ns-victim"), lab::unique("garbage-ns-healthy"));
    let (victim, healthy) = (format!("{}/{victim}", lab::POOL), format!("{}/{healthy}", lab::POOL));
    let _images = Images(vec![victim.clone(), healthy.clone()]);
    let mut first = Vec::new();
    for spec in [&victim, &healthy] {
        a.rbd(&["create", "--size", "64M", spec]);
        a.bench(spec, "rand", "4K", "1M");
        first.push(enable_snapshot_mirroring(&a, spec));
    }
    {
        let _daemon = Daemon::start();
        wait_synced(&b, &victim, first[0], Duration::from_secs(120));
        wait_synced(&b, &healthy, first[1], Duration::from_secs(120));
    }
    a.bench(&victim, "rand", "4K", "1M");
    let snap_id = mirror_snapshot(&a, &victim);
    let header = format!("rbd_header.{}", image_id(&a, &victim));
    let key = format!("snapshot_{snap_id:016x}");
    let saved = a.dir.join(format!("{key}.saved"));
    let saved_path = saved.to_str().expect("utf-8 path").to_owned();
    a.rados(&["-p", lab::POOL, "getomapval", &header, &key, &saved_path]);
    let record = std::fs::read(&saved).expect("the saved record");
    // Put the record back when the test ends, so that the image can be removed.
    struct Restore<'a>(&'a lab::Site, String, String, String);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let _ = self.0.command_output(
                "rados",
                &["-p", lab::POOL, "setomapval", &self.1, &self.2, "--input-file", &self.3],
            );
        }
    }
    let _restore = Restore(&a, header.clone(), key.clone(), saved_path.clone());
    // Cut inside the namespace: the mirror namespace (type 3) is the record's tail.
    let ns_type = record.windows(4).rposition(|w| w == 3u32.to_le_bytes()).expect("a mirror namespace");
    let garbage = a.dir.join(format!("{key}.garbage"));
    std::fs::write(&garbage, &record[..ns_type + 6]).expect("writing the garbage record");
    a.rados(&[
        "-p",
        lab::POOL,
        "setomapval",
        &header,
        &key,
        "--input-file",
        garbage.to_str().expect("utf-8"),
    ]);
    let stock = a.command_output("rbd", &["snap", "ls", "--all", &victim]);
    println!(
        "{header} {key}: {} of {} bytes kept; rbd snap ls --all on site-a: {stock:?}",
        ns_type + 6,
        record.len()
    );

    let (_daemon, log_from, description) = start_until_error(&b, &victim);
    assert!(description.contains(&format!("snapshot {snap_id}")), "{description}");
    assert!(description.contains("does not decode"), "{description}");
    // The other image goes on.
    a.bench(&healthy, "rand", "4K", "1M");
    let next = mirror_snapshot(&a, &healthy);
    wait_synced(&b, &healthy, next, Duration::from_secs(120));
    let (sa, sb) = (a.export_sha256(&healthy), b.export_sha256(&healthy));
    assert_eq!(sa, sb, "{healthy} differs");
    assert!(!daemon_log_since(log_from).contains("panicked"));
    println!("{healthy}: snapshot {next} synced, sha256 {sa} on both sites");
}

/// Site-b's `rbd_mirror_leader` omap of pool `mirror`: its keys, as bytes.
fn leader_keys(b: &lab::Site) -> Vec<Vec<u8>> {
    let out = std::process::Command::new("rados")
        .args(["--cluster", b.name, "-c"])
        .arg(&b.conf)
        .args(["-p", lab::POOL, "listomapkeys", "rbd_mirror_leader"])
        .output()
        .expect("rados listomapkeys");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout.split(|&c| c == b'\n').filter(|k| !k.is_empty()).map(<[u8]>::to_vec).collect()
}

/// An instance record (`instance_<id>` in `rbd_mirror_leader`, listed by cls `rbd`
/// `mirror_instances_list`) whose id is not UTF-8, as no instance writes one: the leader
/// used to take the whole list as empty without a word; now it logs the record as an
/// error, removes it, and keeps the others. Replication goes on.
#[test]
fn an_instance_record_that_does_not_decode_is_logged_and_removed() {
    use std::os::unix::ffi::OsStrExt;
    let (_serial, a, b) = sites();
    let (spec, _images) = mirrored_journal_image(&a, "bad-instance");
    {
        let _daemon = Daemon::start();
        wait_status(&b, &spec, "up+replaying", "");
    }
    let key: &[u8] = b"instance_\xff\xfebad";
    let empty = b.dir.join("empty-instance-record");
    std::fs::write(&empty, b"").expect("writing an empty value");
    let out = std::process::Command::new("rados")
        .args(["--cluster", b.name, "-c"])
        .arg(&b.conf)
        .args(["-p", lab::POOL, "setomapval", "rbd_mirror_leader"])
        .arg(std::ffi::OsStr::from_bytes(key))
        .arg("--input-file")
        .arg(&empty)
        .output()
        .expect("rados setomapval");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(leader_keys(&b).iter().any(|k| k == key), "the record is in place");

    let log_from = daemon_log().len();
    let _daemon = Daemon::start();
    let line = wait_logged(&b, &spec, log_from, "does not decode");
    println!("logged: {line}");
    assert!(line.contains("ERROR") && line.contains("instance_\\xff\\xfebad"), "{line}");
    lab::wait_for("the record removed", Duration::from_secs(30), || {
        let keys = leader_keys(&b);
        if keys.iter().any(|k| k == key) {
            Err(format!("{} keys, the bad one still there", keys.len()))
        } else {
            Ok(())
        }
    });
    healthy_goes_on(&a, &b, &spec, log_from);
}
