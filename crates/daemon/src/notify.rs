//! systemd's notify protocol (`sd_notify(3)`), for `Type=notify` units: `READY=1` once the
//! local cluster is reached and replication runs, `STATUS=` lines, `RELOADING=1` on SIGHUP,
//! `STOPPING=1` at shutdown, and `WATCHDOG=1` every half of `WATCHDOG_USEC` when the unit
//! sets a watchdog. Without `NOTIFY_SOCKET` (not under systemd) every call does nothing.
//! Also the pid file (`pid_file`, as Ceph daemons write it).

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::time::Duration;

/// Where systemd listens, when it does.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace) and
    /// `WATCHDOG_USEC` (honoured only when `WATCHDOG_PID` is unset or ours).
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|s| {
            let s = s.to_string_lossy().into_owned();
            let addr = match s.strip_prefix('@') {
                Some(name) => SocketAddr::from_abstract_name(name.as_bytes()).ok()?,
                None => SocketAddr::from_pathname(&s).ok()?,
            };
            Some((UnixDatagram::unbound().ok()?, addr))
        });
        let ours = std::env::var("WATCHDOG_PID").map_or(true, |p| p == std::process::id().to_string());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|&u| u > 0 && ours)
            .map(|u| Duration::from_micros(u / 2));
        Notifier { target, watchdog }
    }

    /// How often `WATCHDOG=1` is due, when the unit has a watchdog.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends `state` (newline-separated `KEY=value` assignments); failures are logged.
    pub fn send(&self, state: &str) {
        let Some((socket, addr)) = &self.target else { return };
        if let Err(e) = socket.send_to_addr(state.as_bytes(), addr) {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }
}

/// A pid file, removed when dropped.
#[derive(Debug)]
pub struct PidFile(PathBuf);

impl PidFile {
    /// Writes our pid to `path` (created with its directory).
    pub fn create(path: PathBuf) -> std::io::Result<PidFile> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, format!("{}\n", std::process::id()))?;
        Ok(PidFile(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Only our own: another process may have taken the path since.
        if std::fs::read_to_string(&self.0).is_ok_and(|s| s.trim() == std::process::id().to_string()) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_the_notify_socket_and_writes_pid_files() {
        let dir = std::env::temp_dir().join(format!("rbd-mirror-rs-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("notify");
        let listener = UnixDatagram::bind(&sock).unwrap();
        let n = Notifier {
            target: Some((UnixDatagram::unbound().unwrap(), SocketAddr::from_pathname(&sock).unwrap())),
            watchdog: None,
        };
        n.send("READY=1\nSTATUS=ok");
        let mut buf = [0u8; 64];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=ok");
        Notifier { target: None, watchdog: None }.send("READY=1");

        let pid = dir.join("sub/x.pid");
        let f = PidFile::create(pid.clone()).unwrap();
        assert_eq!(std::fs::read_to_string(&pid).unwrap(), format!("{}\n", std::process::id()));
        drop(f);
        assert!(!pid.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
