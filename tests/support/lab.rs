//! Shared by the integration tests of every crate (included with `#[path]`): finds the
//! project's lab (`tests/lab/lab.sh`: site-a and site-b, optionally site-c) and runs the
//! stock `rbd` CLI against it.
//!
//! A missing or stopped lab FAILS the test with instructions; nothing here ever skips.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The lab's state directory, as `lab.sh` chooses it: `RBD_MIRROR_LAB_DIR`, else
/// `/tmp/rbd-mirror-rs-lab` (or `…-labN` for `RBD_MIRROR_LAB_INSTANCE=N`).
pub fn lab_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RBD_MIRROR_LAB_DIR") {
        return PathBuf::from(dir);
    }
    match std::env::var("RBD_MIRROR_LAB_INSTANCE").ok().filter(|i| !i.is_empty() && i != "0") {
        Some(i) => PathBuf::from(format!("/tmp/rbd-mirror-rs-lab{i}")),
        None => PathBuf::from("/tmp/rbd-mirror-rs-lab"),
    }
}

/// The mirrored pool the lab creates on every site.
pub const POOL: &str = "mirror";

/// The pool site-b receives from site-c in the three-site lab (tests/lab/README.md).
pub const POOL_C: &str = "mirror-c";

/// The sites the lab may run, in order.
pub const SITES: [&str; 3] = ["site-a", "site-b", "site-c"];

/// One site of the lab.
#[derive(Debug, Clone)]
pub struct Site {
    /// `site-a`, `site-b` or `site-c`, also the cluster name.
    pub name: &'static str,
    /// Its `ceph.conf`.
    pub conf: PathBuf,
    /// Its directory.
    pub dir: PathBuf,
}

const HOW_TO_START: &str = "the Ceph lab is not running: start it with `tests/lab/lab.sh up` \
     (needs the Ceph packages: see tests/lab/README.md), or run everything with `tests/run.sh`";

const HOW_TO_START_C: &str = "site-c of the Ceph lab is not running: start the three sites with \
     `RBD_MIRROR_LAB_SITES=\"site-a site-b site-c\" tests/lab/lab.sh up` (as tests/run.sh does)";

/// The sites of the lab whose monitor `lab.sh` started (its pid file exists), unchecked:
/// for cleanup, which must not fail.
pub fn started_sites() -> Vec<Site> {
    SITES
        .iter()
        .map(|&name| {
            let dir = lab_dir().join(name);
            Site { name, conf: dir.join(format!("{name}.conf")), dir }
        })
        .filter(|s| s.dir.join(format!("run/mon.{}.pid", &s.name[5..])).is_file())
        .collect()
}

/// A site of the running lab; panics (fails the test) with instructions when it is not up
/// (site-c runs only in a lab brought up with `RBD_MIRROR_LAB_SITES="site-a site-b site-c"`).
pub fn site(name: &'static str) -> Site {
    let dir = lab_dir().join(name);
    let conf = dir.join(format!("{name}.conf"));
    let how = if name == "site-c" { HOW_TO_START_C } else { HOW_TO_START };
    assert!(conf.is_file(), "{how} ({} does not exist)", conf.display());
    let out = Command::new("timeout")
        .args(["30", "ceph", "--cluster", name, "-c"])
        .arg(&conf)
        .args(["--connect-timeout", "15", "fsid"])
        .output()
        .expect("running the ceph CLI");
    assert!(
        out.status.success(),
        "{how} (`ceph fsid` on {name} failed: {})",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Site { name, conf, dir }
}

impl Site {
    /// The fsid written in the site's conf.
    pub fn fsid(&self) -> String {
        let out = self.ceph(&["fsid"]);
        out.trim().to_owned()
    }

    /// Runs `ceph` against this site; panics with its stderr on failure.
    pub fn ceph(&self, args: &[&str]) -> String {
        self.run("ceph", args)
    }

    /// Runs `rbd` against this site; panics with its stderr on failure.
    pub fn rbd(&self, args: &[&str]) -> String {
        self.run("rbd", args)
    }

    /// Runs `rbd` and returns whether it succeeded (for cleanup that may find nothing).
    pub fn rbd_ok(&self, args: &[&str]) -> bool {
        self.command("rbd", args).output().map(|o| o.status.success()).unwrap_or(false)
    }

    /// Runs `ceph` and returns whether it succeeded (for cleanup that may find nothing).
    pub fn ceph_ok(&self, args: &[&str]) -> bool {
        self.command("ceph", args).output().map(|o| o.status.success()).unwrap_or(false)
    }

    /// Runs `tool` against this site: its stdout, or its stderr as the error.
    pub fn command_output(&self, tool: &str, args: &[&str]) -> Result<String, String> {
        let out = self.command(tool, args).output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    fn command(&self, tool: &str, args: &[&str]) -> Command {
        let mut c = Command::new("timeout");
        c.args(["120", tool, "--cluster", self.name, "-c"]).arg(&self.conf).args(args);
        c
    }

    fn run(&self, tool: &str, args: &[&str]) -> String {
        let out = self.command(tool, args).output().unwrap_or_else(|e| panic!("running {tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {} on {} failed: {}",
            args.join(" "),
            self.name,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `rados` against this site; panics with its stderr on failure.
    pub fn rados(&self, args: &[&str]) -> String {
        self.run("rados", args)
    }

    /// The site's monitor addresses as its conf names them (`[v2:ip:port,v1:ip:port]`).
    pub fn mon_host(&self) -> String {
        let conf = std::fs::read_to_string(&self.conf).expect("reading the site conf");
        conf.lines()
            .find_map(|l| l.trim().strip_prefix("mon host = "))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no 'mon host' in {}", self.conf.display()))
    }

    /// Where `rbd-mirror-rs` started by `lab.sh mirror-start` serves Prometheus metrics:
    /// the site's address, port `<mon port prefix>287` (as lab.sh sets it).
    pub fn metrics_addr(&self) -> String {
        let mon = self.mon_host();
        let v2 = mon.trim_start_matches('[').split(',').next().unwrap_or_default();
        let addr = v2.trim_start_matches("v2:");
        let (ip, port) = addr.rsplit_once(':').unwrap_or_else(|| panic!("bad mon host {mon}"));
        let port: u32 = port.parse().unwrap_or_else(|_| panic!("bad mon port in {mon}"));
        format!("{ip}:{}", port / 1000 * 1000 + 287)
    }

    /// The sum of every sample of metric `name` whose labels contain `label` (e.g.
    /// `image="x"`), scraped from our daemon's `/metrics`; `None` if there is no such series.
    pub fn metric(&self, name: &str, label: &str) -> Option<f64> {
        metric_at(&self.metrics_addr(), name, label)
    }

    /// `sha256sum` of `rbd export <spec> -` (the image content as librbd reads it).
    pub fn export_sha256(&self, spec: &str) -> String {
        let script = format!(
            "set -o pipefail; timeout 300 rbd --cluster {} -c '{}' export --no-progress {spec} - | sha256sum",
            self.name,
            self.conf.display()
        );
        let out = Command::new("bash").args(["-c", &script]).output().expect("running rbd export");
        assert!(
            out.status.success(),
            "rbd export {spec} on {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_owned()
    }

    /// Image IO the rbd CLI cannot issue (`tests/support/rbdio.py`: discard, write-zeroes,
    /// write-same, compare-and-write, resize) on `pool/image`.
    pub fn rbdio(&self, spec: &str, op: &[&str]) {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/support/rbdio.py");
        let (pool, image) = spec.split_once('/').expect("pool/image");
        let out = Command::new("/usr/bin/python3")
            .arg(&script)
            .args([self.name, self.conf.to_str().expect("utf-8 conf path"), pool, image])
            .args(op)
            .output()
            .expect("running rbdio.py");
        assert!(
            out.status.success(),
            "rbdio {} {}: {}",
            spec,
            op.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `rbd bench --io-type write` on `spec` (`--io-pattern`, `--io-size`, `--io-total`).
    pub fn bench(&self, spec: &str, pattern: &str, size: &str, total: &str) {
        self.bench_with(spec, pattern, size, total, &[]);
    }

    /// The same with one IO in flight (`--io-threads 1`): the writes land in issue order.
    pub fn bench_one_at_a_time(&self, spec: &str, pattern: &str, size: &str, total: &str) {
        self.bench_with(spec, pattern, size, total, &["--io-threads", "1"]);
    }

    fn bench_with(&self, spec: &str, pattern: &str, size: &str, total: &str, more: &[&str]) {
        let mut args = vec![
            "bench",
            "--io-type",
            "write",
            "--io-pattern",
            pattern,
            "--io-size",
            size,
            "--io-total",
            total,
        ];
        args.extend(more);
        args.push(spec);
        self.rbd(&args);
    }

    /// `rbd ... --format json`, parsed.
    pub fn rbd_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["--format", "json"]);
        let out = self.rbd(&a);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("rbd {} output is not JSON ({e}): {out}", args.join(" ")))
    }

    /// How `rados-ffi` reaches this site as `client.admin`.
    pub fn admin_config(&self) -> rados_ffi::ClusterConfig {
        let mut cfg = rados_ffi::ClusterConfig::local(self.name, Some(self.conf.clone()), "admin");
        cfg.connect_timeout = Duration::from_secs(20);
        cfg
    }
}

/// `tests/lab/lab.sh` with the lab's state directory, for tests that start daemons.
pub fn lab_script(args: &[&str], envs: &[(&str, &str)]) {
    if let Err(e) = try_lab_script(args, envs) {
        panic!("{e}");
    }
}

/// [`lab_script`] without panicking (for a guard's `Drop`): its stderr as the error.
pub fn try_lab_script(args: &[&str], envs: &[(&str, &str)]) -> Result<(), String> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/lab/lab.sh");
    let out = Command::new(&script)
        .args(args)
        .env("RBD_MIRROR_LAB_DIR", lab_dir())
        .envs(envs.iter().copied())
        .output()
        .map_err(|e| format!("running tests/lab/lab.sh: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("lab.sh {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)))
    }
}

/// Polls `f` every 500 ms until it returns `Some`, for at most `timeout`; panics with
/// `what` and the last observation otherwise.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let start = std::time::Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) if start.elapsed() >= timeout => {
                panic!("timed out after {timeout:?} waiting for {what}: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// A name unique to this test run, for images and objects.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos:08x}", std::process::id())
}

/// The sum of every sample of metric `name` whose labels contain `label`, scraped from the
/// `/metrics` endpoint at `addr`; `None` if there is no such series.
pub fn metric_at(addr: &str, name: &str, label: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)
        .unwrap_or_else(|e| panic!("no metrics endpoint at {addr} (is rbd-mirror-rs running?): {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("metrics request");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("metrics response");
    assert!(text.starts_with("HTTP/1.1 200"), "metrics endpoint answered: {text}");
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else { continue };
        if !(rest.starts_with('{') || rest.starts_with(' ')) || !rest.contains(label) {
            continue;
        }
        let value: f64 = rest.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
        found = Some(found.unwrap_or(0.0) + value);
    }
    found
}
