//! Command line. The stock daemon's arguments are accepted unchanged so that any tooling
//! that starts `rbd-mirror --cluster <c> -c <conf> -f --id <id>` can start us instead, and,
//! as on every Ceph daemon, any Ceph option may follow as `--name value`, `--name=value`
//! (dashes and underscores alike) or `--debug-<subsys>=N[/M]`: [`parse`] takes those out
//! before clap sees the rest. `rbd_mirror_*` options are checked here (an unknown or
//! ill-typed one is an error at start); the others go to librados, which checks them.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use image_replayer::MirrorConfig;

/// rbd-mirror-rs: asynchronous RBD image mirroring (a drop-in for Ceph's rbd-mirror).
#[derive(Debug, Parser)]
#[command(name = "rbd-mirror-rs", version, about)]
pub struct Args {
    /// Local cluster name (selects `<cluster>.conf` and `$cluster` in conf paths).
    #[arg(long, global = true, default_value = "ceph")]
    pub cluster: String,

    /// Ceph configuration file of the local cluster (default: Ceph's search path, which
    /// includes `./<cluster>.conf` and `/etc/ceph/<cluster>.conf`).
    #[arg(short = 'c', long = "conf", global = true)]
    pub conf: Option<PathBuf>,

    /// Client id to authenticate as, without `client.` (stock default: `admin`).
    #[arg(short = 'i', long = "id", global = true, conflicts_with = "name")]
    pub id: Option<String>,

    /// Full client name, e.g. `client.rbd-mirror.b` (alternative to `--id`).
    #[arg(short = 'n', long = "name", global = true)]
    pub name: Option<String>,

    /// Keyring file (overrides the conf).
    #[arg(short = 'k', long = "keyring", global = true)]
    pub keyring: Option<PathBuf>,

    /// Stay in the foreground, logging to the log file (without `-f`/`-d` the daemon
    /// detaches, as the stock one).
    #[arg(short = 'f', long = "foreground", global = true)]
    pub foreground: bool,

    /// Foreground with logs to stderr.
    #[arg(short = 'd', global = true)]
    pub debug_foreground: bool,

    /// Run as this user (name or uid) once the log file is open, as a Ceph daemon does
    /// (needs root; the conf, keyring and run directory must be open to that user).
    #[arg(long, global = true)]
    pub setuser: Option<String>,

    /// With `--setuser`: run as this group (name or gid; default the user's primary group).
    #[arg(long, global = true)]
    pub setgroup: Option<String>,

    /// Seconds allowed to reach each cluster's monitors and authenticate.
    #[arg(long, global = true, default_value = "30", value_parser = parse_secs)]
    pub connect_timeout: Duration,

    /// Log filter: a default level and `target=level` directives (`info,image_replayer=debug`);
    /// `RBD_MIRROR_RS_LOG` overrides it.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,

    /// Serve Prometheus metrics (`ceph_rbd_mirror_*`) on this address (`IP:PORT`; default
    /// `0.0.0.0:9287`, where a port already taken is a warning, not an error), or
    /// `off`.
    #[arg(long, global = true, env = "RBD_MIRROR_RS_METRICS_ADDR", value_parser = parse_metrics_addr)]
    pub metrics_addr: Option<MetricsAddr>,

    /// Async runtime worker threads (default: half the CPUs, at least one; librados'
    /// messenger and finisher threads do the network and completion work beside them).
    #[arg(long, global = true, env = "RBD_MIRROR_RS_WORKER_THREADS", hide = true)]
    pub worker_threads: Option<usize>,

    #[command(subcommand)]
    pub command: Option<Command>,

    /// Ceph options given on the command line, in order (names with underscores).
    #[arg(skip)]
    pub ceph_options: Vec<CephOption>,
}

/// A Ceph option from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CephOption {
    /// Its name, with underscores (`rbd_mirror_journal_poll_age`, `debug_rbd`).
    pub name: String,
    /// Its value as given (`true` for a boolean flag given alone).
    pub value: String,
}

/// Ceph's boolean options that may be given without a value (`--daemonize`).
fn is_flag(name: &str) -> bool {
    matches!(
        name,
        "daemonize"
            | "log_to_file"
            | "log_to_stderr"
            | "err_to_stderr"
            | "log_to_syslog"
            | "err_to_syslog"
            | "no_mon_config"
    ) || MirrorConfig::default().get(name).is_some_and(|v| v == "true" || v == "false")
        || name.strip_prefix("default_").is_some_and(is_flag)
}

fn is_bool_literal(v: &str) -> bool {
    matches!(v.to_ascii_lowercase().as_str(), "true" | "false" | "yes" | "no" | "1" | "0" | "on" | "off")
}

/// Parses the command line: Ceph options out, the rest through clap. Errors are clap's
/// (usage, exit 2) or an unknown or ill-typed `rbd_mirror_*` option.
pub fn parse(argv: impl IntoIterator<Item = OsString>) -> Result<Args, clap::Error> {
    let mut cmd = Args::command();
    let mut known: Vec<String> = vec!["help".into(), "version".into()];
    for c in std::iter::once(&cmd).chain(cmd.get_subcommands()) {
        known.extend(c.get_arguments().filter_map(|a| a.get_long()).map(|l| l.replace('-', "_")));
    }
    let (rest, ceph_options) = split_ceph_options(argv, &known);
    let mut probe = MirrorConfig::default();
    for o in ceph_options.iter().filter(|o| MirrorConfig::is_mirror_option(&o.name)) {
        if let Err(e) = probe.set(&o.name, &o.value) {
            return Err(cmd.error(clap::error::ErrorKind::ValueValidation, e.to_string()));
        }
    }
    let matches = cmd.try_get_matches_from_mut(rest)?;
    let mut args = Args::from_arg_matches(&matches)?;
    args.ceph_options = ceph_options;
    Ok(args)
}

/// Takes the Ceph options out of `argv`: every `--name[=value]` whose name is not in
/// `known` (clap's long options, with underscores), `--no-daemonize`, and their values.
fn split_ceph_options(
    argv: impl IntoIterator<Item = OsString>,
    known: &[String],
) -> (Vec<OsString>, Vec<CephOption>) {
    let mut rest = Vec::new();
    let mut options = Vec::new();
    let mut it = argv.into_iter().peekable();
    while let Some(arg) = it.next() {
        let Some(text) = arg.to_str().and_then(|a| a.strip_prefix("--")).filter(|t| !t.is_empty()) else {
            rest.push(arg);
            continue;
        };
        let (name, inline) = match text.split_once('=') {
            Some((n, v)) => (n.replace('-', "_"), Some(v.to_owned())),
            None => (text.replace('-', "_"), None),
        };
        if known.contains(&name) {
            rest.push(arg);
            continue;
        }
        if name == "no_daemonize" {
            options.push(CephOption { name: "daemonize".into(), value: "false".into() });
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => {
                let next_is_value = it
                    .peek()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| !n.starts_with('-') && (!is_flag(&name) || is_bool_literal(n)));
                match (next_is_value, is_flag(&name)) {
                    (true, _) => it.next().and_then(|v| v.into_string().ok()).unwrap_or_default(),
                    (false, true) => "true".to_owned(),
                    (false, false) => String::new(),
                }
            }
        };
        options.push(CephOption { name, value });
    }
    (rest, options)
}

impl Args {
    /// The client id (`rbd-mirror.b`), from `--id`, `--name` or the stock default `admin`.
    pub fn client_id(&self) -> String {
        if let Some(id) = &self.id {
            return id.clone();
        }
        if let Some(name) = &self.name {
            return name.strip_prefix("client.").unwrap_or(name).to_owned();
        }
        "admin".to_owned()
    }
}

/// Subcommands; without one the daemon runs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the mirror daemon (the default).
    Run,
    /// Connect to the local cluster and to every peer of each mirrored pool, and report
    /// fsids, mirror modes and peers, with a clear error for each one that fails.
    Check(CheckArgs),
    /// How far each mirrored image of this site is behind its primary, as a monitoring
    /// plugin: exit 0 ok, 1 warning, 2 critical, 3 unknown.
    Lag(LagArgs),
    /// Move the primary of a pool's images from the peer to this site: demote there, wait
    /// until everything is replayed here, promote here. Safe to run again after a failure.
    Failover(FailoverArgs),
    /// Run at the old primary's site after a forced failover: demote its split-brain images,
    /// resync them from the peer (the daemon must run here), then fail over back as planned.
    /// Reports the bytes copied. Safe to run again after a failure.
    Failback(FailbackArgs),
    /// Compare this site's copy of each image with its primary at a consistent point, object
    /// by object, while replication goes on: exit 0 clean, 1 mismatch, 2 an image could not
    /// be compared, 3 the pool could not be reached.
    Verify(VerifyArgs),
    /// Copy this site's copy of each image at its newest consistent point into a scratch
    /// image, optionally run a command against it, remove it: replication goes on.
    Drill(DrillArgs),
}

/// Arguments of `verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The pool.
    #[arg(long = "pool", short = 'p')]
    pub pool: String,
    /// Images to verify (default: every mirrored image of the pool).
    #[arg(long = "image")]
    pub images: Vec<String>,
    /// Print how each image would be compared; create nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds to wait for the replay of a journal-mode image's verification snapshot.
    #[arg(long, default_value = "300", value_parser = parse_secs)]
    pub sync_timeout: Duration,
    /// Images compared at once.
    #[arg(long, default_value = "4")]
    pub parallel: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Plain)]
    pub format: Format,
}

/// Arguments of `drill`.
#[derive(Debug, clap::Args)]
pub struct DrillArgs {
    /// The pool.
    #[arg(long = "pool", short = 'p')]
    pub pool: String,
    /// Images to drill (default: every mirrored image of the pool).
    #[arg(long = "image")]
    pub images: Vec<String>,
    /// Pool of this site for the scratch images (default: the mirrored pool).
    #[arg(long)]
    pub scratch_pool: Option<String>,
    /// Shell command run against each scratch image, with RBD_MIRROR_DRILL_SPEC (the scratch
    /// image), RBD_MIRROR_DRILL_IMAGE, RBD_MIRROR_DRILL_CLUSTER, _CONF and _ID set.
    #[arg(long)]
    pub exec: Option<String>,
    /// Print what would be done; create nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds to wait for the replay of a journal-mode image's drill snapshot.
    #[arg(long, default_value = "300", value_parser = parse_secs)]
    pub sync_timeout: Duration,
    /// Images drilled at once.
    #[arg(long, default_value = "2")]
    pub parallel: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Plain)]
    pub format: Format,
}

/// Arguments of `lag`.
#[derive(Debug, clap::Args)]
pub struct LagArgs {
    /// Pools to look at (default: every pool with mirroring enabled).
    #[arg(long = "pool", short = 'p')]
    pub pools: Vec<String>,
    /// Images to look at (default: every mirrored image).
    #[arg(long = "image")]
    pub images: Vec<String>,
    /// Seconds behind from which an image is a warning.
    #[arg(long = "warn", default_value = "300")]
    pub warn_secs: f64,
    /// Seconds behind from which an image is critical.
    #[arg(long = "crit", default_value = "1800")]
    pub crit_secs: f64,
    /// Images looked at at once.
    #[arg(long, default_value = "8")]
    pub parallel: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Plain)]
    pub format: Format,
}

/// Arguments of `failover`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("kind").required(true).args(["planned", "force"])))]
pub struct FailoverArgs {
    /// The pool.
    #[arg(long = "pool", short = 'p')]
    pub pool: String,
    /// Images to fail over (default: every mirrored image of the pool).
    #[arg(long = "image")]
    pub images: Vec<String>,
    /// A planned failover: the primary is reachable and is demoted first (nothing is lost).
    #[arg(long)]
    pub planned: bool,
    /// A forced failover: the primary is unreachable; promote here with force and report
    /// what each image holds (the RPO suffered). The peer is not contacted.
    #[arg(long)]
    pub force: bool,
    /// Print what would be done; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds to wait for one image to be replayed up to its demotion.
    #[arg(long, default_value = "600", value_parser = parse_secs)]
    pub sync_timeout: Duration,
    /// Images failed over at once.
    #[arg(long, default_value = "8")]
    pub parallel: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Plain)]
    pub format: Format,
}

/// Arguments of `failback`.
#[derive(Debug, clap::Args)]
pub struct FailbackArgs {
    /// The pool.
    #[arg(long = "pool", short = 'p')]
    pub pool: String,
    /// Images to fail back (default: every mirrored image of the pool).
    #[arg(long = "image")]
    pub images: Vec<String>,
    /// Print what would be done; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds to wait for one image's resync, and for its replay up to the demotion.
    #[arg(long, default_value = "600", value_parser = parse_secs)]
    pub sync_timeout: Duration,
    /// Images handled at once.
    #[arg(long, default_value = "8")]
    pub parallel: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Plain)]
    pub format: Format,
}

/// Arguments of `check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Pools to check (default: every pool with mirroring enabled).
    #[arg(long = "pool", short = 'p')]
    pub pools: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Plain)]
    pub format: Format,
}

/// Output formats of operator subcommands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable text.
    Plain,
    /// One JSON document.
    Json,
}

/// Where `/metrics` is served when `--metrics-addr` is not given: every address, port 9287
/// (the mgr's `prometheus` module has 9283, `ceph-exporter` 9926).
pub const DEFAULT_METRICS_ADDR: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 9287);

/// `--metrics-addr`: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsAddr {
    /// Serve there.
    At(std::net::SocketAddr),
    /// No endpoint.
    Off,
}

fn parse_metrics_addr(s: &str) -> Result<MetricsAddr, String> {
    match s {
        "off" | "none" | "false" | "" => Ok(MetricsAddr::Off),
        _ => s.parse().map(MetricsAddr::At).map_err(|e| format!("{s:?} is not IP:PORT or off: {e}")),
    }
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|e| format!("{s:?} is not a number of seconds: {e}"))?;
    if !(0.1..=3600.0).contains(&secs) {
        return Err(format!("{secs} s is outside 0.1..=3600"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The async runtime's worker threads when `--worker-threads` is not given: half of
/// `cpus`, at least one: fewer cross-thread wake-ups cost less CPU per journal entry
/// (benches/results/TUNING.md).
pub fn default_worker_threads(cpus: usize) -> usize {
    (cpus / 2).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_stock_daemon_arguments() {
        let a = Args::try_parse_from([
            "rbd-mirror-rs",
            "--cluster",
            "site-b",
            "-c",
            "site-b.conf",
            "-f",
            "--id",
            "rbd-mirror.b",
        ])
        .unwrap();
        assert_eq!(a.cluster, "site-b");
        assert_eq!(a.conf.as_deref(), Some(std::path::Path::new("site-b.conf")));
        assert!(a.foreground);
        assert_eq!(a.client_id(), "rbd-mirror.b");
        assert!(a.command.is_none());
    }

    fn parse_from(args: &[&str]) -> Result<Args, clap::Error> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn cephadms_command_line_is_taken() {
        // As cephadm starts the stock rbd-mirror container: `--default-<option>` values go
        // under the conf (librados' default level), `--no-mon-config` is a flag.
        let a = parse_from(&[
            "rbd-mirror-rs",
            "-n",
            "client.rbd-mirror.host1.abcdef",
            "-f",
            "--setuser",
            "ceph",
            "--setgroup",
            "ceph",
            "--default-log-to-file=false",
            "--default-log-to-stderr=true",
            "--default-log-stderr-prefix=debug ",
            "--no-mon-config",
            // Not cephadm's: this machine has no /etc/ceph/ceph.conf.
            "-c",
            "/dev/null",
        ])
        .unwrap();
        assert_eq!(a.client_id(), "rbd-mirror.host1.abcdef");
        assert_eq!(a.setuser.as_deref(), Some("ceph"));
        let got: Vec<(&str, &str)> =
            a.ceph_options.iter().map(|o| (o.name.as_str(), o.value.as_str())).collect();
        assert_eq!(
            got,
            [
                ("default_log_to_file", "false"),
                ("default_log_to_stderr", "true"),
                ("default_log_stderr_prefix", "debug "),
                ("no_mon_config", "true"),
            ]
        );
        let cfg = crate::check::local_config(&a);
        assert!(cfg.defaults.contains(&("log_to_file".to_owned(), "false".to_owned())), "{:?}", cfg.defaults);
        assert!(cfg.defaults.contains(&("log_stderr_prefix".to_owned(), "debug ".to_owned())));
        assert!(cfg.no_mon_config);
        assert!(!cfg.options.iter().any(|(n, _)| n == "no_mon_config"));
        assert!(!cfg.options.iter().any(|(n, _)| n.starts_with("default_")));
        // The log file setting is librados': here, none.
        let values = cfg.conf_values(&["log_to_file", "log_stderr_prefix"]).unwrap();
        assert_eq!(values, [Some("false".to_owned()), Some("debug ".to_owned())]);
    }

    #[test]
    fn ceph_options_as_ceph_test_helpers_give_them() {
        let a = parse_from(&[
            "rbd-mirror-rs",
            "--cluster",
            "cluster1",
            "--id",
            "mirror.0",
            "--rbd-mirror-delete-retry-interval=5",
            "--rbd-mirror-image-state-check-interval=5",
            "--rbd-mirror-journal-poll-age=1",
            "--rbd-mirror-pool-replayers-refresh-interval=5",
            "--debug-rbd=30",
            "--debug-journaler=30",
            "--debug-rbd_mirror=30",
            "--daemonize=true",
            "--rbd_mirror_concurrent_image_syncs",
            "3",
            "--log-file",
            "/var/log/ceph/x.log",
            "--no-daemonize",
            "--log-to-stderr",
            "-f",
        ])
        .unwrap();
        assert_eq!(a.cluster, "cluster1");
        assert_eq!(a.client_id(), "mirror.0");
        assert!(a.foreground);
        let got: Vec<(&str, &str)> =
            a.ceph_options.iter().map(|o| (o.name.as_str(), o.value.as_str())).collect();
        assert_eq!(
            got,
            [
                ("rbd_mirror_delete_retry_interval", "5"),
                ("rbd_mirror_image_state_check_interval", "5"),
                ("rbd_mirror_journal_poll_age", "1"),
                ("rbd_mirror_pool_replayers_refresh_interval", "5"),
                ("debug_rbd", "30"),
                ("debug_journaler", "30"),
                ("debug_rbd_mirror", "30"),
                ("daemonize", "true"),
                ("rbd_mirror_concurrent_image_syncs", "3"),
                ("log_file", "/var/log/ceph/x.log"),
                ("daemonize", "false"),
                ("log_to_stderr", "true"),
            ]
        );
        // Subcommands still parse after a flag option.
        let a = parse_from(&["rbd-mirror-rs", "--daemonize", "check", "--format", "json"]).unwrap();
        assert!(matches!(a.command, Some(Command::Check(_))));
    }

    #[test]
    fn bad_rbd_mirror_options_are_errors() {
        let e = parse_from(&["rbd-mirror-rs", "--rbd-mirror-no-such-option=1"]).unwrap_err().to_string();
        assert!(e.contains("unknown option rbd_mirror_no_such_option"), "{e}");
        let e = parse_from(&["rbd-mirror-rs", "--rbd-mirror-concurrent-image-syncs", "many"]).unwrap_err();
        assert!(e.to_string().contains("cannot parse \"many\""), "{e}");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn name_and_default_client() {
        let a = Args::try_parse_from(["rbd-mirror-rs", "-n", "client.x", "check"]).unwrap();
        assert_eq!(a.client_id(), "x");
        let a =
            Args::try_parse_from(["rbd-mirror-rs", "check", "--format", "json", "--pool", "mirror"]).unwrap();
        assert_eq!(a.client_id(), "admin");
        match a.command {
            Some(Command::Check(c)) => {
                assert_eq!(c.pools, vec!["mirror"]);
                assert_eq!(c.format, Format::Json);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn connect_timeout_is_bounded() {
        assert!(Args::try_parse_from(["rbd-mirror-rs", "--connect-timeout", "0", "check"]).is_err());
        let a = Args::try_parse_from(["rbd-mirror-rs", "--connect-timeout", "2.5", "check"]).unwrap();
        assert_eq!(a.connect_timeout, Duration::from_millis(2500));
    }

    #[test]
    fn worker_threads_default_to_half_the_cpus() {
        assert_eq!([1, 2, 3, 8].map(default_worker_threads), [1, 1, 1, 4]);
        assert_eq!(Args::try_parse_from(["rbd-mirror-rs"]).unwrap().worker_threads, None);
        let a = Args::try_parse_from(["rbd-mirror-rs", "--worker-threads", "3"]).unwrap();
        assert_eq!(a.worker_threads, Some(3));
    }
}
