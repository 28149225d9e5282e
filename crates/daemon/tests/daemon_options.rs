//! Options as every Ceph daemon takes them, on the lab: the command line Ceph's own test
//! helpers start the stock rbd-mirror with, options in the monitors' configuration
//! database at start and changed at runtime (`ceph config set`), and a clear error at start
//! for an unknown or ill-typed `rbd_mirror_*` option.

#[path = "../../../tests/support/lab.rs"]
mod lab;
#[path = "support/mirror.rs"]
mod mirror;

use std::process::Command;
use std::time::Duration;

use mirror::{
    daemon_log, daemon_log_since, image_name, signal_daemon, sites, wait_replicated, Daemon, Images,
};

/// The client section of our daemon in the monitors' database.
const WHO: &str = "client.rbd-mirror.b";

/// Waits until the daemon's log since `from` has a line with every one of `parts`.
fn wait_log_line(what: &str, from: usize, parts: &[&str]) -> String {
    lab::wait_for(what, Duration::from_secs(60), || {
        let log = daemon_log_since(from);
        log.lines()
            .find(|l| parts.iter().all(|p| l.contains(p)))
            .map(str::to_owned)
            .ok_or_else(|| format!("no line with {parts:?} in: {log}"))
    })
}

/// Removes options from the monitors' database when the test ends, passed or not.
struct MonOptions<'a>(&'a lab::Site, Vec<&'static str>);

impl Drop for MonOptions<'_> {
    fn drop(&mut self) {
        for name in &self.1 {
            let _ = self.0.ceph_ok(&["config", "rm", WHO, name]);
        }
    }
}

#[test]
fn the_command_line_of_cephs_test_helpers_is_taken_and_replication_runs() {
    let (_serial, a, b) = sites();
    let spec = format!("{}/{}", lab::POOL, lab::unique("options"));
    let _images = Images(vec![spec.clone()]);
    a.rbd(&["create", "--size", "16M", "--image-feature", "layering,exclusive-lock,journaling", &spec]);
    a.rbd(&["mirror", "image", "enable", &spec, "journal"]);
    a.bench(&spec, "rand", "4K", "1M");

    let from = daemon_log().len();
    // As qa/workunits/rbd/rbd_mirror_helpers.sh starts the stock daemon (but --daemonize),
    // which names no metrics address: /metrics is served on the default one.
    let _daemon = Daemon::start_with_env(
        &[
            "--rbd-mirror-delete-retry-interval=5",
            "--rbd-mirror-image-state-check-interval=5",
            "--rbd-mirror-journal-poll-age=1",
            "--rbd-mirror-pool-replayers-refresh-interval=5",
            "--debug-rbd=0",
            "--debug-journaler=0",
            "--debug-rbd_mirror=5",
            "--rbd_mirror_concurrent_image_syncs",
            "2",
        ],
        &[("RBD_MIRROR_LAB_METRICS_DEFAULT", "1")],
    );
    let line =
        wait_log_line("the options in effect", from, &["configuration", "rbd_mirror_delete_retry_interval"]);
    println!("{line}");
    assert!(line.contains("value=5"), "{line}");
    let line = wait_log_line(
        "the option given with a space",
        from,
        &["configuration", "rbd_mirror_concurrent_image_syncs"],
    );
    assert!(line.contains("value=2"), "{line}");
    // --debug-rbd_mirror=5 is our debug level.
    wait_log_line("debug lines", from, &["DEBUG"]);

    let primary = a.export_sha256(&spec);
    wait_replicated(&b, &spec, &primary, Duration::from_secs(180));
    // On by default, at *:9287: the image's series, its last commit a moment ago.
    let label = format!("image=\"{}\"", image_name(&spec));
    let metadata = lab::metric_at("127.0.0.1:9287", "ceph_rbd_mirror_metadata", "instance_id=");
    assert_eq!(metadata, Some(1.0), "the daemon's metadata series");
    let last_sync = lab::wait_for("a commit position in /metrics", Duration::from_secs(30), || {
        lab::metric_at("127.0.0.1:9287", "rbd_mirror_rs_image_last_sync_timestamp_seconds", &label)
            .ok_or_else(|| "no series yet".to_owned())
    });
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
    assert!((0.0..300.0).contains(&(now - last_sync)), "last sync {last_sync}, now {now}");
}

#[test]
fn options_of_the_monitors_apply_at_start_and_at_runtime() {
    let (_serial, _a, b) = sites();
    let _cleanup =
        MonOptions(&b, vec!["rbd_mirror_delete_retry_interval", "rbd_mirror_concurrent_image_syncs"]);
    b.ceph(&["config", "set", WHO, "rbd_mirror_delete_retry_interval", "7"]);
    let from = daemon_log().len();
    let _daemon = Daemon::start();
    let line = wait_log_line(
        "the monitors' option at start",
        from,
        &["configuration", "rbd_mirror_delete_retry_interval"],
    );
    assert!(line.contains("value=7"), "{line}");

    // At runtime, as stock applies it: no restart.
    let from = daemon_log().len();
    b.ceph(&["config", "set", WHO, "rbd_mirror_concurrent_image_syncs", "3"]);
    let line = wait_log_line(
        "the runtime change",
        from,
        &["configuration changed", "rbd_mirror_concurrent_image_syncs"],
    );
    println!("{line}");
    assert!(line.contains("from=5") && line.contains("to=3"), "{line}");
    // And back when removed.
    let from = daemon_log().len();
    b.ceph(&["config", "rm", WHO, "rbd_mirror_concurrent_image_syncs"]);
    let line = wait_log_line(
        "the option removed",
        from,
        &["configuration changed", "rbd_mirror_concurrent_image_syncs"],
    );
    assert!(line.contains("from=3") && line.contains("to=5"), "{line}");
}

/// The log level follows Ceph's `debug_rbd_mirror` as a stock daemon's does, without a
/// restart: from the monitors' database (`ceph config set`), then from the admin socket's
/// `config set` (which wins over the monitors, as in Ceph).
#[test]
fn debug_rbd_mirror_from_the_monitors_or_the_admin_socket_sets_the_log_level() {
    let (_serial, _a, b) = sites();
    let _cleanup = MonOptions(&b, vec!["debug_rbd_mirror"]);
    let _daemon = Daemon::start();
    let from = daemon_log().len();
    b.ceph(&["config", "set", WHO, "debug_rbd_mirror", "20/20"]);
    let line =
        wait_log_line("debug_rbd_mirror from the monitors", from, &["log level changed", "filter=trace"]);
    println!("{line}");
    // The leader's heartbeat (every 5 s) now logs at debug level.
    wait_log_line("a DEBUG line", from, &["DEBUG"]);

    let asok = b.dir.join("run/client.rbd-mirror.b.asok");
    let out = std::process::Command::new("timeout")
        .args(["30", "ceph", "--admin-daemon"])
        .arg(&asok)
        .args(["config", "set", "debug_rbd_mirror", "0/5"])
        .output()
        .expect("ceph --admin-daemon");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let from = daemon_log().len();
    let line =
        wait_log_line("debug_rbd_mirror from the admin socket", from.saturating_sub(4096), &["filter=warn"]);
    println!("{line}");
}

#[test]
fn unknown_or_ill_typed_options_stop_the_daemon_at_start_with_a_clear_error() {
    let (_serial, _a, b) = sites();
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_rbd-mirror-rs"))
            .args(["--cluster", "site-b", "-c"])
            .arg(&b.conf)
            .args(["-f", "--id", "rbd-mirror.b", "--connect-timeout", "10"])
            .args(extra)
            .arg("check")
            .current_dir(&b.dir)
            .output()
            .expect("running rbd-mirror-rs");
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
        (out.status.code(), text)
    };
    let (code, err) = run(&["--rbd-mirror-no-such-option=1"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("unknown option rbd_mirror_no_such_option"), "{err}");
    let (code, err) = run(&["--rbd-mirror-concurrent-image-syncs", "many"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("rbd_mirror_concurrent_image_syncs") && err.contains("many"), "{err}");
    // An option librados does not know: refused by librados, named.
    let (code, err) = run(&["--no-such-ceph-option=1"]);
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("no_such_ceph_option"), "{err}");
    // A good one is taken (check reaches the cluster with it).
    let (code, err) = run(&["--rbd-mirror-journal-poll-age=2", "--debug-ms=0"]);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn pid_file_signals_and_systemd_notify_as_a_ceph_daemon_under_systemd() {
    let (_serial, _a, b) = sites();
    let dir = b.dir.join("run/notify-test");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test dir");
    let socket_path = dir.join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("notify socket");
    socket.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let pid_file = dir.join("$cluster-$name.pid");
    let expanded = dir.join("site-b-client.rbd-mirror.b.pid");
    let notify = socket_path.to_string_lossy().into_owned();
    let pid_arg = pid_file.to_string_lossy().into_owned();
    let daemon = Daemon::start_with_env(
        &["--pid-file", &pid_arg],
        &[("NOTIFY_SOCKET", &notify), ("WATCHDOG_USEC", "2000000")],
    );
    // Messages until one has `want`.
    let next_with = |want: &str| -> String {
        let mut buf = [0u8; 4096];
        loop {
            let n = socket.recv(&mut buf).unwrap_or_else(|e| panic!("no {want} from the daemon: {e}"));
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            if m.lines().any(|l| l.starts_with(want)) {
                return m;
            }
        }
    };
    let ready = next_with("READY=1");
    println!("{ready}");
    assert!(ready.contains("STATUS=") && ready.contains("pool replayer"), "{ready}");
    next_with("WATCHDOG=1");
    next_with("STATUS=");
    let pid = signal_daemon("-0");
    let written = std::fs::read_to_string(&expanded).expect("the pid file, $cluster and $name expanded");
    assert_eq!(written.trim(), pid);

    // SIGHUP: reload, the daemon keeps running.
    let from = daemon_log().len();
    signal_daemon("-HUP");
    next_with("RELOADING=1");
    next_with("READY=1");
    wait_log_line("SIGHUP logged", from, &["SIGHUP"]);
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists(), "still running after SIGHUP");

    // SIGTERM: stopping, positions committed, the pid file gone.
    drop(daemon);
    next_with("STOPPING=1");
    assert!(!expanded.exists(), "pid file removed at exit");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Kills the process in the pid file at `0` when the test ends, passed or not.
struct KillOnDrop(std::path::PathBuf);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.0) {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
    }
}

#[test]
fn daemonize_writes_the_pid_file_logs_to_the_log_file_and_reopens_it_on_sighup() {
    let (_serial, _a, b) = sites();
    lab::lab_script(&["mirror-stop", "site-b"], &[]);
    let dir = b.dir.join("run/daemonize-test");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test dir");
    let pid_file = dir.join("rbd-mirror.pid");
    let _kill = KillOnDrop(pid_file.clone());
    let log = dir.join("client.rbd-mirror.b.log");
    // As Ceph's test helpers start it: --daemonize=true, the parent returns once the child
    // is up.
    let started = std::time::Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_rbd-mirror-rs"))
        .args(["--cluster", "site-b", "-c"])
        .arg(&b.conf)
        .args(["--id", "rbd-mirror.b", "--daemonize=true", "--pid-file"])
        .arg(&pid_file)
        .arg("--log-file")
        .arg(dir.join("$name.log"))
        .current_dir(&b.dir)
        .status()
        .expect("starting rbd-mirror-rs");
    assert!(status.success(), "the parent exits 0 once the daemon is up");
    println!("parent returned after {:?}", started.elapsed());
    let pid = std::fs::read_to_string(&pid_file).expect("pid file written by the daemon").trim().to_owned();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists(), "daemon {pid} running");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("").split_whitespace().collect();
    assert_eq!(fields.get(3), Some(&pid.as_str()), "the daemon leads its own session: {stat}");
    let text = std::fs::read_to_string(&log).expect("log file ($name expanded)");
    assert!(text.contains("connected to the local cluster"), "{text}");

    // Rotated, then SIGHUP: a new log file.
    std::fs::rename(&log, dir.join("rotated.log")).expect("rotate");
    assert!(Command::new("kill").args(["-HUP", &pid]).status().expect("kill").success());
    lab::wait_for("the log file reopened", Duration::from_secs(30), || {
        std::fs::read_to_string(&log).map_err(|e| e.to_string())?;
        Ok(())
    });
    // SIGTERM: exits within 5 s, positions committed, pid file removed.
    let stop = std::time::Instant::now();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    lab::wait_for("the daemon to exit", Duration::from_secs(5), || {
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            Err(format!("{pid} still running"))
        } else {
            Ok(())
        }
    });
    println!("exited {:?} after SIGTERM", stop.elapsed());
    assert!(!pid_file.exists(), "pid file removed");
    let text = std::fs::read_to_string(&log).expect("reopened log");
    assert!(text.contains("SIGTERM"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Opens site-b's run and log directories to every user while the test runs (as Ceph's
/// packaging gives /var/run/ceph and /var/log/ceph to the `ceph` user).
struct OpenDirs(Vec<std::path::PathBuf>);

impl OpenDirs {
    fn new(dirs: Vec<std::path::PathBuf>) -> Self {
        for d in &dirs {
            chmod(d, 0o777);
        }
        OpenDirs(dirs)
    }
}

impl Drop for OpenDirs {
    fn drop(&mut self) {
        for d in &self.0 {
            chmod(d, 0o755);
        }
    }
}

fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// The real, effective, saved and filesystem ids of `pid`'s `Uid:` or `Gid:` line.
fn proc_ids(pid: &str, key: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    let line = status.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key} in {status}"));
    line[key.len()..].split_whitespace().map(|v| v.parse().expect("id")).collect()
}

#[test]
fn setuser_and_setgroup_drop_privileges_and_replication_runs() {
    let me = proc_ids("self", "Uid:");
    assert_eq!(me[1], 0, "this test starts the daemon as root (CI runs as root) to drop to nobody");
    let (_serial, a, b) = sites();
    let spec = format!("{}/{}", lab::POOL, lab::unique("setuser"));
    let _images = Images(vec![spec.clone()]);
    a.rbd(&["create", "--size", "16M", "--image-feature", "layering,exclusive-lock,journaling", &spec]);
    a.rbd(&["mirror", "image", "enable", &spec, "journal"]);
    a.bench(&spec, "rand", "4K", "512K");

    // An unknown user: a clear error at start, on the console as well as in the log.
    let out = Command::new(env!("CARGO_BIN_EXE_rbd-mirror-rs"))
        .args(["--cluster", "site-b", "-c"])
        .arg(&b.conf)
        .args(["-f", "--id", "rbd-mirror.b", "--setuser", "no-such-user-rbd-mirror"])
        .current_dir(&b.dir)
        .output()
        .expect("running rbd-mirror-rs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("unknown user \"no-such-user-rbd-mirror\""), "{err}");

    let _open = OpenDirs::new(vec![b.dir.join("run"), b.dir.join("log")]);
    let from = daemon_log().len();
    let _daemon = Daemon::start_with(&["--setuser", "nobody", "--setgroup", "nogroup"]);
    wait_log_line("the drop of privileges", from, &["running as nobody"]);
    let pid = signal_daemon("-0");
    assert_eq!(proc_ids(&pid, "Uid:"), vec![65534; 4], "uid of the daemon");
    assert_eq!(proc_ids(&pid, "Gid:"), vec![65534; 4], "gid of the daemon");
    let groups = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let groups = groups.lines().find(|l| l.starts_with("Groups:")).unwrap_or_default().to_owned();
    assert_eq!(groups.split_whitespace().skip(1).collect::<Vec<_>>(), vec!["65534"], "{groups}");

    // It replicates and answers on its admin socket as that user.
    let primary = a.export_sha256(&spec);
    wait_replicated(&b, &spec, &primary, Duration::from_secs(180));
    let asok = b.dir.join("run/client.rbd-mirror.b.asok");
    let out = Command::new("ceph").arg("--admin-daemon").arg(&asok).arg("version").output().expect("ceph");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
