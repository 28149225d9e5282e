//! Command line. The stock daemon's arguments are accepted unchanged so that any tooling
//! that starts `rbd-mirror --cluster <c> -c <conf> -f --id <id>` can start us instead.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

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

    /// Stay in the foreground (the only mode; accepted for compatibility).
    #[arg(short = 'f', long = "foreground", global = true)]
    pub foreground: bool,

    /// Foreground with logs to stderr (accepted for compatibility).
    #[arg(short = 'd', global = true)]
    pub debug_foreground: bool,

    /// Accepted for compatibility with the stock daemon; ignored (run as the invoking user).
    #[arg(long, global = true, hide = true)]
    pub setuser: Option<String>,

    /// Accepted for compatibility with the stock daemon; ignored.
    #[arg(long, global = true, hide = true)]
    pub setgroup: Option<String>,

    /// Seconds allowed to reach each cluster's monitors and authenticate.
    #[arg(long, global = true, default_value = "30", value_parser = parse_secs)]
    pub connect_timeout: Duration,

    /// Log filter (tracing `EnvFilter` syntax); `RBD_MIRROR_RS_LOG` overrides it.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,

    /// Serve Prometheus metrics (`ceph_rbd_mirror_*`) on this address, e.g.
    /// `127.0.0.1:9287`; off when absent.
    #[arg(long, global = true, env = "RBD_MIRROR_RS_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Async runtime worker threads (default: half the CPUs, at least one; librados'
    /// messenger and finisher threads do the network and completion work beside them).
    #[arg(long, global = true, env = "RBD_MIRROR_RS_WORKER_THREADS", hide = true)]
    pub worker_threads: Option<usize>,

    #[command(subcommand)]
    pub command: Option<Command>,
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
