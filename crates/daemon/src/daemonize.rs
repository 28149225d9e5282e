//! How the daemon runs as a process, as a Ceph daemon does: detached (`--daemonize`, the
//! default without `-f`/`-d`, as stock rbd-mirror) with its output in the log file, or in
//! the foreground (its output in the log file too when `--log-file` is given).

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
}

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
    let explicit_log = args.ceph_options.iter().any(|o| o.name == "log_file") && !args.debug_foreground;
    if !daemon && !explicit_log {
        return Ok(Process::default());
    }
    let config = crate::check::local_config(args);
    let values = config.conf_values(&["log_file"]).map_err(|e| e.to_string())?;
    let log_file = values.first().cloned().flatten().filter(|p| !p.is_empty()).unwrap_or_else(|| {
        // Ceph's daemon default, `/var/log/ceph/$cluster-$name.log`.
        format!("/var/log/ceph/{}-client.{}.log", args.cluster, args.client_id())
    });
    let log_file = PathBuf::from(log_file);
    let daemon = if daemon {
        Some(rados_ffi::process::daemonize().map_err(|e| format!("daemonize: {e}"))?)
    } else {
        None
    };
    rados_ffi::process::redirect_output(&log_file)
        .map_err(|e| format!("cannot open the log file {}: {e}", log_file.display()))?;
    Ok(Process { daemon, log_file: Some(log_file) })
}
