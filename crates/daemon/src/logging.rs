//! The log filter, as a Ceph daemon's log level works: Ceph's `debug_rbd_mirror` as librados
//! has it (the conf file, `CEPH_ARGS`, `--debug-rbd-mirror`, the monitors' database, the
//! admin socket's `config set`) picks our level, at start and whenever it changes; while it
//! is at our default ([`DEFAULT_DEBUG_RBD_MIRROR`], installed as librados' default) the
//! `--log-level` filter applies; `RBD_MIRROR_RS_LOG` overrides both for the whole run.
//!
//! A filter is a list of `target=level` directives and a default level (`info`,
//! `warn,image_replayer=debug`): tracing's `Targets`, which needs no regular expressions
//! (`EnvFilter`'s span and field directives brought 0.45 MB of resident code for nothing
//! the daemon used).

use std::str::FromStr;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// Our default of `debug_rbd_mirror` (Ceph's is `0/5`): level 1, `info`, as `--log-level`'s
/// default. Any other value set anywhere maps through [`ceph_level`].
pub const DEFAULT_DEBUG_RBD_MIRROR: &str = "1/5";

/// Applies a new filter; set once tracing is up, unless `RBD_MIRROR_RS_LOG` fixed it.
type Reload = Box<dyn Fn(Targets) -> Result<(), String> + Send + Sync>;
static RELOAD: OnceLock<Reload> = OnceLock::new();
/// `--log-level`, and the `debug_rbd_mirror` value the filter follows now.
static STATE: Mutex<(String, Option<String>)> = Mutex::new((String::new(), None));

/// Ceph's log level `N[/M]` as ours: 0 warn, 1-4 info, 5-19 debug, 20 and more trace.
pub fn ceph_level(value: &str) -> Option<&'static str> {
    let n: u32 = value.split('/').next()?.trim().parse().ok()?;
    Some(match n {
        0 => "warn",
        1..=4 => "info",
        5..=19 => "debug",
        _ => "trace",
    })
}

/// The filter directive for `debug_rbd_mirror` (librados' value) over `log_level`.
fn directive(log_level: &str, debug_rbd_mirror: Option<&str>) -> String {
    match debug_rbd_mirror.filter(|v| v.trim() != DEFAULT_DEBUG_RBD_MIRROR).and_then(ceph_level) {
        Some(level) => level.to_owned(),
        None => log_level.to_owned(),
    }
}

/// The filter a directive says, or why it does not parse.
fn parse(directive: &str) -> Result<Targets, String> {
    Targets::from_str(directive).map_err(|e| format!("{directive:?}: {e}"))
}

/// The filter a directive says, or, when it does not parse, `info` and why (for the log).
fn filter(directive: &str) -> (Targets, Option<String>) {
    match parse(directive) {
        Ok(t) => (t, None),
        Err(why) => (Targets::new().with_default(tracing::Level::INFO), Some(format!("{why}; info instead"))),
    }
}

/// Starts logging to stderr (the log file once output is redirected there).
pub fn init(log_level: &str, debug_rbd_mirror: Option<String>) {
    let mut unparsed = Vec::new();
    let fixed = std::env::var("RBD_MIRROR_RS_LOG").ok().and_then(|v| match parse(&v) {
        Ok(t) => Some(t),
        Err(why) => {
            unparsed.push(format!("RBD_MIRROR_RS_LOG {why}; ignored"));
            None
        }
    });
    let follows_ceph = fixed.is_none();
    let targets = fixed.unwrap_or_else(|| {
        let (t, why) = filter(&directive(log_level, debug_rbd_mirror.as_deref()));
        unparsed.extend(why);
        t
    });
    let (targets, handle) = tracing_subscriber::reload::Layer::new(targets);
    tracing_subscriber::registry()
        .with(targets)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false)
                // Plain text when stderr is a log file (as under lab.sh or systemd), colours on a tty.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
    for why in unparsed {
        tracing::warn!("log filter {why}");
    }
    if follows_ceph {
        let _ = RELOAD.set(Box::new(move |f| handle.reload(f).map_err(|e| e.to_string())));
    }
    *STATE.lock().unwrap_or_else(|p| p.into_inner()) = (log_level.to_owned(), debug_rbd_mirror);
}

/// Follows a change of `debug_rbd_mirror` (librados' current value), as the stock daemon's
/// log level follows `ceph config set` and `config set` without a restart.
pub fn follow_debug_rbd_mirror(value: Option<String>) {
    let Some(reload) = RELOAD.get() else { return };
    let mut state = STATE.lock().unwrap_or_else(|p| p.into_inner());
    if state.1 == value {
        return;
    }
    let directive = directive(&state.0, value.as_deref());
    let (targets, unparsed) = filter(&directive);
    if let Some(why) = unparsed {
        tracing::warn!("log filter {why}");
    }
    match reload(targets) {
        Ok(()) => {
            // At warning level: seen whatever the new level (an operator's own change).
            tracing::warn!(debug_rbd_mirror = value.as_deref().unwrap_or(""), filter = %directive, "log level changed");
            state.1 = value;
        }
        Err(e) => tracing::warn!(error = %e, "log level change failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cephs_levels_map_onto_ours_and_our_default_leaves_log_level() {
        assert_eq!(ceph_level("0/5"), Some("warn"));
        assert_eq!(ceph_level("1"), Some("info"));
        assert_eq!(ceph_level(" 10/10"), Some("debug"));
        assert_eq!(ceph_level("20/20"), Some("trace"));
        assert_eq!(ceph_level("x"), None);
        assert_eq!(
            directive("info,image_replayer=debug", Some(DEFAULT_DEBUG_RBD_MIRROR)),
            "info,image_replayer=debug"
        );
        assert_eq!(directive("info", None), "info");
        assert_eq!(directive("info", Some("20/20")), "trace");
        assert_eq!(directive("debug", Some("0/5")), "warn", "Ceph's default value, set, is taken");
    }

    #[test]
    fn a_filter_is_a_default_level_and_target_directives_and_what_does_not_parse_is_info() {
        use tracing::level_filters::LevelFilter;
        let (t, why) = filter("warn,image_replayer=debug,rados_ffi::ioctx=trace");
        assert!(why.is_none());
        assert_eq!(t.default_level(), Some(LevelFilter::WARN));
        assert!(t.would_enable("image_replayer::journal::replay", &tracing::Level::DEBUG));
        assert!(!t.would_enable("image_replayer::journal::replay", &tracing::Level::TRACE));
        assert!(t.would_enable("rados_ffi::ioctx", &tracing::Level::TRACE));
        assert!(!t.would_enable("peer_manager::leader", &tracing::Level::INFO));
        let (t, why) = filter("image_replayer=loud");
        assert!(why.is_some_and(|w| w.contains("image_replayer=loud")));
        assert_eq!(t.default_level(), Some(LevelFilter::INFO));
    }
}
