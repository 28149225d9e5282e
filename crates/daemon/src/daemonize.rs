//! How the daemon runs as a process, as a Ceph daemon does: detached (`--daemonize`, the
//! default without `-f`/`-d`, as stock rbd-mirror) or in the foreground with `-f` (as
//! Ceph's systemd units start it), its output in the log file either way (the conf's `log
//! file`, or `--log-file`, default `/var/log/ceph/$cluster-$name.log`); with `-d`, or an
//! empty `log file`, on standard error.

use std::os::fd::AsFd;
use std::path::PathBuf;

use rados_ffi::process::Daemonized;

use crate::cli::Args;

/// What `run` keeps of the process set-up.
#[derive(Debug, Default)]
pub struct Process {
    /// The detached child's word to its waiting parent, until start-up is done.
    pub daemon: Option<Daemonized>,
    /// Where standard output and error go (reopened on SIGHUP), when not a terminal's.
    pub log_file: Option<PathBuf>,
    /// Standard error as it was before output went to the log file (foreground only): a
    /// fatal error is written there too, for whoever started us.
    pub console: Option<std::fs::File>,
}

/// Ceph's daemon default of `log_file` (`$cluster`, `$name` expanded by librados).
pub const DAEMON_LOG_FILE: &str = "/var/log/ceph/$cluster-$name.log";

/// Whether `args` ask for a detached daemon: `--daemonize[=bool]` (the last one), else yes
/// unless `-f` or `-d`, as the stock daemon.
pub fn wants_daemon(args: &Args) -> bool {
    if args.foreground || args.debug_foreground {
        return false;
    }
    let given = args.ceph_options.iter().rev().find(|o| o.name == "daemonize");
    given.is_none_or(|o| matches!(o.value.to_ascii_lowercase().as_str(), "true" | "yes" | "1" | "on" | ""))
}

/// Detaches and redirects output as `args` ask, before the async runtime starts (the
/// process must still have one thread).
pub fn setup(args: &Args) -> Result<Process, String> {
    let daemon = wants_daemon(args);
    if !daemon && args.debug_foreground {
        return Ok(Process::default());
    }
    let config = crate::check::local_config(args);
    let values = config.conf_values(&["log_file", "log_to_file"]).map_err(|e| e.to_string())?;
    let (log_file, to_file) = match values.as_slice() {
        [log_file, to_file] => (log_file.clone(), to_file.clone()),
        _ => (None, None),
    };
    if to_file.as_deref() == Some("false") {
        // `--default-log-to-file=false`, as cephadm runs the stock daemon: output stays on
        // stderr (the container's log).
        return Ok(Process::default());
    }
    let log_file = match log_file {
        Some(path) if path.is_empty() => return Ok(Process::default()),
        Some(path) => PathBuf::from(path),
        // Not an option of this librados: Ceph's daemon default.
        None => PathBuf::from(format!("/var/log/ceph/{}-client.{}.log", args.cluster, args.client_id())),
    };
    if !daemon {
        // In the foreground, a log file that cannot be opened leaves output on stderr.
        let console = std::io::stderr().as_fd().try_clone_to_owned().ok().map(std::fs::File::from);
        return match rados_ffi::process::redirect_output(&log_file) {
            Ok(()) => Ok(Process { daemon: None, log_file: Some(log_file), console }),
            Err(e) => {
                eprintln!(
                    "rbd-mirror-rs: cannot open the log file {}: {e}; logging to stderr",
                    log_file.display()
                );
                Ok(Process::default())
            }
        };
    }
    let daemon = rados_ffi::process::daemonize().map_err(|e| format!("daemonize: {e}"))?;
    rados_ffi::process::redirect_output(&log_file)
        .map_err(|e| format!("cannot open the log file {}: {e}", log_file.display()))?;
    Ok(Process { daemon: Some(daemon), log_file: Some(log_file), console: None })
}

/// `--setuser`/`--setgroup`: the log file is handed to that user (it reopens it on SIGHUP),
/// then the process becomes it, as Ceph's `global_init` does, before any thread starts and
/// before the clusters are reached (the conf, keyring and run directory must be readable,
/// and the run directory writable, by that user, as Ceph's packaging makes them).
pub fn become_user(args: &Args, process: &Process) -> Result<(), String> {
    let Some(user) = args.setuser.as_deref() else {
        if let Some(group) = &args.setgroup {
            tracing::warn!(%group, "--setgroup without --setuser is ignored");
        }
        return Ok(());
    };
    if !rados_ffi::process::is_root() {
        // As Ceph's global_init: not an error.
        tracing::warn!("ignoring --setuser {user} since I am not root");
        return Ok(());
    }
    let id = rados_ffi::process::resolve_identity(user, args.setgroup.as_deref())
        .map_err(|e| format!("--setuser {user}: {e}"))?;
    if let Some(log) = &process.log_file {
        std::os::unix::fs::chown(log, Some(id.uid), Some(id.gid))
            .map_err(|e| format!("cannot hand the log file {} to {user}: {e}", log.display()))?;
    }
    rados_ffi::process::drop_privileges(id)
        .map_err(|e| format!("cannot become {user} (uid {}, gid {}): {e}", id.uid, id.gid))?;
    tracing::info!(user, uid = id.uid, gid = id.gid, "running as {user}");
    Ok(())
}
