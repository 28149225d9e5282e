//! The daemon's one configuration value: a field per option, named exactly as the Ceph
//! option it is (`rbd_mirror_journal_commit_age`, `rbd_mirror_concurrent_image_syncs`, ...),
//! plus the few timings of our own, named `rbd_mirror_rs_*`. The daemon builds it and hands
//! a [`ConfigWatch`] down; readers take the current value where they use it
//! (`config.borrow()`), so a change made through [`ConfigHandle::update`] applies from the
//! next use without a restart; [`MirrorConfig::runtime_updatable`] says which options are
//! meant to (as stock applies them at runtime).
//!
//! Every option is declared once, in the `options!` table below: name, type, default,
//! bounds, whether it changes at runtime. Names, types, defaults and bounds of the Ceph
//! options are Pacific's (`src/common/options.cc`: `get_rbd_mirror_options()` for
//! `rbd_mirror_*`, `get_rbd_options()` for the per-image `rbd_mirroring_*`). Seconds are
//! [`Duration`]s, parsed as Ceph parses them (a float or an integer count of seconds).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// Why an option was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// No such option.
    #[error("unknown option {0}")]
    Unknown(String),
    /// The value does not parse as the option's type.
    #[error("option {name}: cannot parse {value:?} as {expected}")]
    BadValue {
        /// The option.
        name: &'static str,
        /// The value given.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// The value is outside the option's bounds or allowed values.
    #[error("option {name}: {value} is out of range ({allowed})")]
    OutOfRange {
        /// The option.
        name: &'static str,
        /// The value given.
        value: String,
        /// The bounds or allowed values.
        allowed: String,
    },
}

/// How an option's value is parsed, printed and bounded.
trait OptionValue: Sized {
    /// What the error says was expected.
    const EXPECTED: &'static str;
    fn parse(s: &str) -> Option<Self>;
    fn show(&self) -> String;
    /// The value compared against the option's bounds.
    fn magnitude(&self) -> f64;
}

impl OptionValue for Duration {
    const EXPECTED: &'static str = "seconds";
    fn parse(s: &str) -> Option<Self> {
        let secs: f64 = s.trim().parse().ok()?;
        Duration::try_from_secs_f64(secs).ok()
    }
    fn show(&self) -> String {
        let secs = self.as_secs_f64();
        if secs.fract() == 0.0 {
            format!("{}", self.as_secs())
        } else {
            format!("{secs}")
        }
    }
    fn magnitude(&self) -> f64 {
        self.as_secs_f64()
    }
}

impl OptionValue for u64 {
    const EXPECTED: &'static str = "an unsigned integer";
    fn parse(s: &str) -> Option<Self> {
        s.trim().parse().ok()
    }
    fn show(&self) -> String {
        self.to_string()
    }
    fn magnitude(&self) -> f64 {
        *self as f64
    }
}

impl OptionValue for i64 {
    const EXPECTED: &'static str = "an integer";
    fn parse(s: &str) -> Option<Self> {
        s.trim().parse().ok()
    }
    fn show(&self) -> String {
        self.to_string()
    }
    fn magnitude(&self) -> f64 {
        *self as f64
    }
}

impl OptionValue for f64 {
    const EXPECTED: &'static str = "a number";
    fn parse(s: &str) -> Option<Self> {
        s.trim().parse().ok().filter(|v: &f64| v.is_finite())
    }
    fn show(&self) -> String {
        self.to_string()
    }
    fn magnitude(&self) -> f64 {
        *self
    }
}

impl OptionValue for bool {
    const EXPECTED: &'static str = "a boolean (true/false, yes/no, 1/0)";
    fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Some(true),
            "false" | "no" | "off" | "0" => Some(false),
            _ => None,
        }
    }
    fn show(&self) -> String {
        self.to_string()
    }
    fn magnitude(&self) -> f64 {
        f64::from(u8::from(*self))
    }
}

/// A byte size, parsed as Ceph's `TYPE_SIZE` (`4G`, `768M`, `4096`, with optional `B`/`i`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl OptionValue for Size {
    const EXPECTED: &'static str = "a size (bytes, or with K/M/G/T)";
    fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let s = s.strip_suffix(['B', 'b']).unwrap_or(s);
        let s = s.strip_suffix('i').unwrap_or(s);
        let (digits, shift) = match s.char_indices().last()? {
            (i, 'K' | 'k') => (s.get(..i)?, 10),
            (i, 'M' | 'm') => (s.get(..i)?, 20),
            (i, 'G' | 'g') => (s.get(..i)?, 30),
            (i, 'T' | 't') => (s.get(..i)?, 40),
            _ => (s, 0),
        };
        let n: u64 = digits.trim().parse().ok()?;
        n.checked_mul(1u64 << shift).map(Size)
    }
    fn show(&self) -> String {
        self.0.to_string()
    }
    fn magnitude(&self) -> f64 {
        self.0 as f64
    }
}

impl OptionValue for String {
    const EXPECTED: &'static str = "a string";
    fn parse(s: &str) -> Option<Self> {
        Some(s.trim().to_owned())
    }
    fn show(&self) -> String {
        self.clone()
    }
    fn magnitude(&self) -> f64 {
        0.0
    }
}

/// Declares every option once: the struct, its defaults, and set/get/names/runtime by name.
macro_rules! options {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident : $ty:ty = $default:expr,
            min $min:expr, max $max:expr, allowed $allowed:expr, runtime $runtime:expr;
    )*) => {
        /// The daemon's configuration: one field per option, named as the option.
        #[derive(Debug, Clone, PartialEq)]
        pub struct MirrorConfig {
            $( $(#[doc = $doc])* pub $name: $ty, )*
        }

        impl Default for MirrorConfig {
            fn default() -> Self {
                MirrorConfig { $( $name: $default, )* }
            }
        }

        impl MirrorConfig {
            /// Every option's name.
            pub fn names() -> &'static [&'static str] {
                &[$( stringify!($name), )*]
            }

            /// Sets option `name` (dashes and underscores alike) from its text `value`, as
            /// Ceph parses that option's type, within its bounds.
            pub fn set(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
                let wanted = name.trim().replace('-', "_");
                $(
                    if wanted == stringify!($name) {
                        let v: $ty = OptionValue::parse(value).ok_or_else(|| ConfigError::BadValue {
                            name: stringify!($name),
                            value: value.to_owned(),
                            expected: <$ty as OptionValue>::EXPECTED,
                        })?;
                        check(stringify!($name), &v, $min, $max, $allowed)?;
                        self.$name = v;
                        return Ok(());
                    }
                )*
                Err(ConfigError::Unknown(name.to_owned()))
            }

            /// Option `name`'s value as Ceph prints it (`None`: no such option).
            pub fn get(&self, name: &str) -> Option<String> {
                let wanted = name.trim().replace('-', "_");
                $( if wanted == stringify!($name) { return Some(self.$name.show()); } )*
                None
            }

            /// Whether a change of option `name` applies while the daemon runs (as stock
            /// applies it), rather than at the next start.
            pub fn runtime_updatable(name: &str) -> bool {
                let wanted = name.trim().replace('-', "_");
                $( if wanted == stringify!($name) { return $runtime; } )*
                false
            }
        }
    };
}

fn check<T: OptionValue>(
    name: &'static str,
    v: &T,
    min: Option<f64>,
    max: Option<f64>,
    allowed: &[&str],
) -> Result<(), ConfigError> {
    let m = v.magnitude();
    let below = min.is_some_and(|min| m < min);
    let above = max.is_some_and(|max| m > max);
    let shown = v.show();
    if below || above {
        let lo = min.map_or("-".to_owned(), |x| x.to_string());
        let hi = max.map_or("-".to_owned(), |x| x.to_string());
        return Err(ConfigError::OutOfRange { name, value: shown, allowed: format!("{lo}..{hi}") });
    }
    if !allowed.is_empty() && !allowed.contains(&shown.as_str()) {
        return Err(ConfigError::OutOfRange { name, value: shown, allowed: allowed.join(", ") });
    }
    Ok(())
}

const NONE: &[&str] = &[];

options! {
    /// How often replay writes its commit position to the primary's journal (stock 5 s; ours
    /// 1 s: a restart replays less again, and a commit costs one cls call).
    rbd_mirror_journal_commit_age: Duration = Duration::from_secs(1),
        min Some(0.0), max None, allowed NONE, runtime true;
    /// Longest wait between two looks at the primary's journal without a notification (stock
    /// 5 s; ours 1 s).
    rbd_mirror_journal_poll_age: Duration = Duration::from_secs(1),
        min Some(0.0), max None, allowed NONE, runtime true;
    /// Seconds between updates of a sync point's object number (stock 30; not used: our
    /// initial sync records its progress per object copied).
    rbd_mirror_sync_point_update_age: Duration = Duration::from_secs(30),
        min None, max None, allowed NONE, runtime false;
    /// Image syncs (initial and snapshot) in parallel per pool (stock 5; applied at runtime,
    /// as stock's throttler).
    rbd_mirror_concurrent_image_syncs: u64 = 5,
        min None, max None, allowed NONE, runtime true;
    /// Interval to refresh the pools, peers and namespaces (stock 30 s, plus notifications;
    /// not used: ours looks every `rbd_mirror_rs_pool_refresh_interval`, 1 s).
    rbd_mirror_pool_replayers_refresh_interval: Duration = Duration::from_secs(30),
        min None, max None, allowed NONE, runtime false;
    /// Image deletions in parallel (stock 1, at least 1; ours deletes one at a time).
    rbd_mirror_concurrent_image_deletions: u64 = 1,
        min Some(1.0), max None, allowed NONE, runtime true;
    /// Shortest wait before a failed deletion is tried again (stock 30 s).
    rbd_mirror_delete_retry_interval: Duration = Duration::from_secs(30),
        min None, max None, allowed NONE, runtime true;
    /// Interval of the image state check (stock 30 s, at least 1).
    rbd_mirror_image_state_check_interval: Duration = Duration::from_secs(30),
        min Some(1.0), max None, allowed NONE, runtime false;
    /// Seconds between two leader heartbeats (stock 5, at least 1; for the leader to come).
    rbd_mirror_leader_heartbeat_interval: Duration = Duration::from_secs(5),
        min Some(1.0), max None, allowed NONE, runtime false;
    /// Missed heartbeats before a non-leader tries to take the lock (stock 2).
    rbd_mirror_leader_max_missed_heartbeats: u64 = 2,
        min None, max None, allowed NONE, runtime false;
    /// Failed acquisitions after missed heartbeats before the lock is broken (stock 3).
    rbd_mirror_leader_max_acquire_attempts_before_break: u64 = 3,
        min None, max None, allowed NONE, runtime false;
    /// Seconds a client whose lock is broken stays blocklisted (stock 0: the OSDs' default,
    /// one hour); used when a dead leader's or instance's lock is broken.
    rbd_blocklist_expire_seconds: u64 = 0,
        min None, max None, allowed NONE, runtime true;
    /// How images are mapped to instances: `simple` or `none` (stock `simple`).
    rbd_mirror_image_policy_type: String = "simple".to_owned(),
        min None, max None, allowed &["none", "simple"], runtime false;
    /// Seconds after which an image may be moved to another instance again (stock 300).
    rbd_mirror_image_policy_migration_throttle: Duration = Duration::from_secs(300),
        min None, max None, allowed NONE, runtime false;
    /// Throttle of image map updates to instances, seconds (stock 1, at least 1).
    rbd_mirror_image_policy_update_throttle_interval: Duration = Duration::from_secs(1),
        min Some(1.0), max None, allowed NONE, runtime false;
    /// Idle seconds before images are rebalanced across instances (stock 0: never).
    rbd_mirror_image_policy_rebalance_timeout: Duration = Duration::ZERO,
        min None, max None, allowed NONE, runtime false;
    /// Priority of the daemon-wide perf counters (stock 5, 0..11).
    rbd_mirror_perf_stats_prio: i64 = 5,
        min Some(0.0), max Some(11.0), allowed NONE, runtime false;
    /// Priority of the per-image perf counters (stock 5, 0..11).
    rbd_mirror_image_perf_stats_prio: i64 = 5,
        min Some(0.0), max Some(11.0), allowed NONE, runtime false;
    /// Cache autotuning under tcmalloc (stock true; no cache to tune here).
    rbd_mirror_memory_autotune: bool = true,
        min None, max None, allowed NONE, runtime false;
    /// Memory the stock daemon tries to stay within under tcmalloc (stock 4G; accepted).
    rbd_mirror_memory_target: Size = Size(4 << 30),
        min None, max None, allowed NONE, runtime false;
    /// Minimum memory estimate for autotuning (stock 768M; accepted).
    rbd_mirror_memory_base: Size = Size(768 << 20),
        min None, max None, allowed NONE, runtime false;
    /// Expected fragmentation for autotuning (stock 0.15, 0..1; accepted).
    rbd_mirror_memory_expected_fragmentation: f64 = 0.15,
        min Some(0.0), max Some(1.0), allowed NONE, runtime false;
    /// Minimum cache memory for autotuning (stock 128M; accepted).
    rbd_mirror_memory_cache_min: Size = Size(128 << 20),
        min None, max None, allowed NONE, runtime false;
    /// Seconds between cache resizes when autotuning (stock 5; accepted).
    rbd_mirror_memory_cache_resize_interval: Duration = Duration::from_secs(5),
        min None, max None, allowed NONE, runtime false;
    /// Seconds between cache rebalances when autotuning (stock 30; accepted).
    rbd_mirror_memory_cache_autotune_interval: Duration = Duration::from_secs(30),
        min None, max None, allowed NONE, runtime false;
    /// Resync an image by itself once the primary disconnected its journal client for
    /// lagging (librbd option, per image or pool; stock false).
    rbd_mirroring_resync_after_disconnect: bool = false,
        min None, max None, allowed NONE, runtime true;
    /// Seconds a deleted primary's non-primary copy stays in the trash (librbd option, per
    /// image or pool; stock 0).
    rbd_mirroring_delete_delay: Duration = Duration::ZERO,
        min None, max None, allowed NONE, runtime true;
    /// Seconds journal entries wait before they are replayed (librbd option, per image or
    /// pool; stock 0).
    rbd_mirroring_replay_delay: Duration = Duration::ZERO,
        min None, max None, allowed NONE, runtime true;
    /// Mirror snapshots kept per image (librbd option; stock 5, at least 3).
    rbd_mirroring_max_mirroring_snapshots: u64 = 5,
        min Some(3.0), max None, allowed NONE, runtime true;
    /// Ours: how often a replaying image's mirror status is refreshed.
    rbd_mirror_rs_status_interval: Duration = Duration::from_secs(5),
        min Some(0.1), max None, allowed NONE, runtime true;
    /// Ours: longest wait between two looks at an idle primary journal (three looks in a row
    /// found nothing; before, `rbd_mirror_journal_poll_age`). The primary's own commits,
    /// every `rbd_journal_commit_age` (5 s) while it writes, notify its journal header and
    /// wake replay at once, so this is only the safety net.
    rbd_mirror_rs_journal_idle_poll_age: Duration = Duration::from_secs(120),
        min Some(0.1), max None, allowed NONE, runtime true;
    /// Ours: wait before an image whose replay failed is tried again.
    rbd_mirror_rs_image_retry_interval: Duration = Duration::from_secs(30),
        min Some(0.1), max None, allowed NONE, runtime true;
    /// Ours: wait before the roles of an image that may not be replayed (remote non-primary,
    /// local primary) are checked again.
    rbd_mirror_rs_role_check_interval: Duration = Duration::from_secs(5),
        min Some(0.1), max None, allowed NONE, runtime true;
    /// Ours: longest wait between two scans of the peer's mirrored images without a
    /// notification.
    rbd_mirror_rs_pool_rescan_interval: Duration = Duration::from_secs(30),
        min Some(0.1), max None, allowed NONE, runtime true;
    /// Ours: how often the mirrored pools, their peers and their namespaces with mirroring
    /// enabled are read again, so that pool replayers and namespace replayers start and stop
    /// as they come and go (a few cls calls per pool).
    rbd_mirror_rs_pool_refresh_interval: Duration = Duration::from_secs(1),
        min Some(0.1), max None, allowed NONE, runtime true;
    /// Ours: how often the primary pool is told we pull from it (`mirror_peer_ping`).
    rbd_mirror_rs_peer_ping_interval: Duration = Duration::from_secs(30),
        min Some(1.0), max None, allowed NONE, runtime true;
    /// Ours: wait before a pool replayer whose peer could not be reached tries again.
    rbd_mirror_rs_pool_retry_interval: Duration = Duration::from_secs(30),
        min Some(0.1), max None, allowed NONE, runtime true;
    /// Ours: how often the mgr service-map status is refreshed.
    rbd_mirror_rs_service_status_interval: Duration = Duration::from_secs(5),
        min Some(1.0), max None, allowed NONE, runtime false;
    /// Ours: how often free heap memory is given back to the system.
    rbd_mirror_rs_memory_release_interval: Duration = Duration::from_secs(10),
        min Some(1.0), max None, allowed NONE, runtime false;
    /// Ours: time image replayers have to commit and stop after SIGTERM / SIGINT.
    rbd_mirror_rs_shutdown_grace: Duration = Duration::from_secs(20),
        min Some(1.0), max None, allowed NONE, runtime true;
    /// Ours: the bandwidth cap of one peer connection (a pool replayer), shared by its
    /// image replayers, in bytes/s of data read from the primary (full and snapshot syncs,
    /// journal replay); 0: none.
    rbd_mirror_rs_peer_bandwidth_limit: Size = Size(0),
        min None, max None, allowed NONE, runtime true;
    /// Ours: each image's own bandwidth cap, bytes/s, on top of its peer's (0: none); a
    /// primary image's metadata key of this name overrides it for that image.
    rbd_mirror_rs_image_bandwidth_limit: Size = Size(0),
        min None, max None, allowed NONE, runtime true;
}

/// The options whose default we change, with Ceph's default (the rest are Ceph's).
const CEPH_DEFAULTS_WE_CHANGE: &[(&str, &str)] =
    &[("rbd_mirror_journal_commit_age", "5"), ("rbd_mirror_journal_poll_age", "5")];

impl MirrorConfig {
    /// Whether `name` is one of Ceph's options (librados knows it), not one of ours.
    pub fn is_ceph_option(name: &str) -> bool {
        !name.replace('-', "_").starts_with("rbd_mirror_rs_")
    }

    /// Whether `name` belongs to this configuration (an `rbd_mirror_*` or `rbd_mirroring_*`
    /// option, ours included), rather than to librados.
    pub fn is_mirror_option(name: &str) -> bool {
        name.replace('-', "_").starts_with("rbd_mirror")
    }

    /// Our defaults of the Ceph options whose default we change, for librados to hold as
    /// its own defaults (Ceph's `--default-<option>`): under the conf file, `CEPH_ARGS`,
    /// the command line and the monitors' database, so the value librados then has is the
    /// one in force, Ceph's default value too when an operator sets it.
    pub fn librados_defaults() -> Vec<(&'static str, String)> {
        let ours = MirrorConfig::default();
        CEPH_DEFAULTS_WE_CHANGE.iter().filter_map(|(name, _)| Some((*name, ours.get(name)?))).collect()
    }

    /// This configuration with Ceph's options as `lookup` reads them (librados' view: the
    /// conf file, `CEPH_ARGS`, the command line and the monitors' database, with Ceph's
    /// precedence, over [`MirrorConfig::librados_defaults`]). With `runtime_only`, only
    /// options that apply at runtime are taken. Values that do not parse or are out of
    /// range are left out and returned.
    pub fn with_ceph_values(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
        runtime_only: bool,
    ) -> (MirrorConfig, Vec<ConfigError>) {
        let mut next = self.clone();
        let mut errors = Vec::new();
        for name in MirrorConfig::names() {
            if !MirrorConfig::is_ceph_option(name) || (runtime_only && !MirrorConfig::runtime_updatable(name))
            {
                continue;
            }
            let Some(raw) = lookup(name) else { continue };
            // Checked in a scratch copy: a bad value leaves the one in force.
            let mut probe = next.clone();
            match probe.set(name, &raw) {
                Ok(()) => next = probe,
                Err(e) => errors.push(e),
            }
        }
        (next, errors)
    }

    /// The options whose values differ between `self` and `other`: (name, self's, other's).
    pub fn diff(&self, other: &MirrorConfig) -> Vec<(&'static str, String, String)> {
        MirrorConfig::names()
            .iter()
            .filter_map(|name| {
                let (a, b) = (self.get(name)?, other.get(name)?);
                (a != b).then_some((*name, a, b))
            })
            .collect()
    }
}

/// The readers' side: the current configuration, and a way to wait for a change.
pub type ConfigWatch = watch::Receiver<Arc<MirrorConfig>>;

/// The owner's side (the daemon): changes the configuration every reader sees.
#[derive(Debug)]
pub struct ConfigHandle {
    sender: watch::Sender<Arc<MirrorConfig>>,
}

impl ConfigHandle {
    /// Starts with `config`; hands back the owner's handle and a reader.
    pub fn new(config: MirrorConfig) -> (ConfigHandle, ConfigWatch) {
        let (sender, receiver) = watch::channel(Arc::new(config));
        (ConfigHandle { sender }, receiver)
    }

    /// The current configuration.
    pub fn current(&self) -> Arc<MirrorConfig> {
        self.sender.borrow().clone()
    }

    /// Another reader.
    pub fn watch(&self) -> ConfigWatch {
        self.sender.subscribe()
    }

    /// Applies `change` to a copy of the current configuration; readers are told only when
    /// it changed something. A change that fails leaves the configuration as it was.
    pub fn update(
        &self,
        change: impl FnOnce(&mut MirrorConfig) -> Result<(), ConfigError>,
    ) -> Result<bool, ConfigError> {
        let mut next = (*self.current()).clone();
        change(&mut next)?;
        Ok(self.sender.send_if_modified(|current| {
            if **current == next {
                false
            } else {
                *current = Arc::new(next);
                true
            }
        }))
    }
}

/// A configuration that never changes (tools and tests).
pub fn fixed(config: MirrorConfig) -> ConfigWatch {
    let (handle, watch) = ConfigHandle::new(config);
    // The receiver keeps the value after the sender is gone.
    drop(handle);
    watch
}

/// Where a per-image override came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverrideSource {
    /// `rbd config pool set` (the local pool's `rbd_info` metadata).
    Pool,
    /// `rbd config image set` (the local image's metadata).
    Image,
}

impl MirrorConfig {
    /// This configuration with the per-pool, then per-image overrides of the image's
    /// `rbd_mirroring_*` options applied (as librbd applies them to the image it opens):
    /// `pool` and `image` are the metadata entries `conf_<option>` → value. Other options
    /// are not per image; a value that does not parse is left out and returned as an error
    /// (the caller logs it), so one bad override does not stop the image.
    pub fn with_image_overrides<'a>(
        &self,
        pool: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        image: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> (MirrorConfig, Vec<(OverrideSource, ConfigError)>) {
        let mut config = self.clone();
        let mut errors = Vec::new();
        let sources = pool
            .into_iter()
            .map(|e| (OverrideSource::Pool, e))
            .chain(image.into_iter().map(|e| (OverrideSource::Image, e)));
        for (source, (key, value)) in sources {
            let Some(name) = key.strip_prefix(rbd_types::cls_rbd::CONFIG_METADATA_PREFIX) else { continue };
            if !name.starts_with("rbd_mirroring_") {
                continue;
            }
            let value = String::from_utf8_lossy(value);
            if let Err(e) = config.set(name, &value) {
                errors.push((source, e));
            }
        }
        (config, errors)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn pool_then_image_overrides_of_rbd_mirroring_options() {
        let global = MirrorConfig::default();
        let pool: Vec<(&str, &[u8])> = vec![
            ("conf_rbd_mirroring_replay_delay", b"30"),
            ("conf_rbd_mirroring_delete_delay", b"60"),
            ("conf_rbd_mirror_concurrent_image_syncs", b"1"),
            ("other_key", b"x"),
        ];
        let image: Vec<(&str, &[u8])> = vec![
            ("conf_rbd_mirroring_replay_delay", b"12"),
            ("conf_rbd_mirroring_max_mirroring_snapshots", b"x"),
        ];
        let (c, errors) = global.with_image_overrides(pool, image);
        assert_eq!(c.rbd_mirroring_replay_delay, Duration::from_secs(12), "the image's wins");
        assert_eq!(c.rbd_mirroring_delete_delay, Duration::from_secs(60), "the pool's");
        assert_eq!(
            c.rbd_mirror_concurrent_image_syncs, global.rbd_mirror_concurrent_image_syncs,
            "not per image"
        );
        assert_eq!(c.rbd_mirroring_max_mirroring_snapshots, 5, "a bad value is left out");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, OverrideSource::Image);
    }
    use super::*;

    #[test]
    fn defaults_are_stock_except_where_ours_differ() {
        let c = MirrorConfig::default();
        let get = |n: &str| c.get(n).unwrap_or_else(|| panic!("{n} missing"));
        // Stock Pacific defaults.
        for (name, stock) in [
            ("rbd_mirror_sync_point_update_age", "30"),
            ("rbd_mirror_concurrent_image_syncs", "5"),
            ("rbd_mirror_pool_replayers_refresh_interval", "30"),
            ("rbd_mirror_concurrent_image_deletions", "1"),
            ("rbd_mirror_delete_retry_interval", "30"),
            ("rbd_mirror_image_state_check_interval", "30"),
            ("rbd_mirror_leader_heartbeat_interval", "5"),
            ("rbd_mirror_leader_max_missed_heartbeats", "2"),
            ("rbd_mirror_leader_max_acquire_attempts_before_break", "3"),
            ("rbd_mirror_image_policy_type", "simple"),
            ("rbd_mirror_image_policy_migration_throttle", "300"),
            ("rbd_mirror_image_policy_update_throttle_interval", "1"),
            ("rbd_mirror_image_policy_rebalance_timeout", "0"),
            ("rbd_mirror_perf_stats_prio", "5"),
            ("rbd_mirror_image_perf_stats_prio", "5"),
            ("rbd_mirror_memory_target", "4294967296"),
            ("rbd_mirroring_resync_after_disconnect", "false"),
            ("rbd_mirroring_delete_delay", "0"),
            ("rbd_mirroring_replay_delay", "0"),
            ("rbd_mirroring_max_mirroring_snapshots", "5"),
        ] {
            assert_eq!(get(name), stock, "{name}");
        }
        // Ours (stock 5 s for both).
        assert_eq!(get("rbd_mirror_journal_commit_age"), "1");
        assert_eq!(get("rbd_mirror_journal_poll_age"), "1");
    }

    #[test]
    fn set_parses_as_ceph_with_dashes_or_underscores() {
        let mut c = MirrorConfig::default();
        c.set("rbd-mirror-journal-poll-age", "0.5").unwrap();
        assert_eq!(c.rbd_mirror_journal_poll_age, Duration::from_millis(500));
        c.set("rbd_mirror_concurrent_image_syncs", " 3 ").unwrap();
        assert_eq!(c.rbd_mirror_concurrent_image_syncs, 3);
        c.set("rbd_mirroring_resync_after_disconnect", "yes").unwrap();
        assert!(c.rbd_mirroring_resync_after_disconnect);
        c.set("rbd_mirror_memory_target", "2G").unwrap();
        assert_eq!(c.rbd_mirror_memory_target, Size(2 << 30));
        c.set("rbd_mirror_image_policy_type", "none").unwrap();
        assert_eq!(c.get("rbd-mirror-image-policy-type").as_deref(), Some("none"));
    }

    #[test]
    fn errors_name_the_option_and_what_was_wrong() {
        let mut c = MirrorConfig::default();
        assert_eq!(c.set("rbd_mirror_no_such", "1"), Err(ConfigError::Unknown("rbd_mirror_no_such".into())));
        assert!(matches!(
            c.set("rbd_mirror_concurrent_image_syncs", "many"),
            Err(ConfigError::BadValue { name: "rbd_mirror_concurrent_image_syncs", .. })
        ));
        assert!(matches!(c.set("rbd_mirror_journal_commit_age", "-1"), Err(ConfigError::BadValue { .. })));
        assert!(matches!(
            c.set("rbd_mirror_concurrent_image_deletions", "0"),
            Err(ConfigError::OutOfRange { name: "rbd_mirror_concurrent_image_deletions", .. })
        ));
        assert!(matches!(c.set("rbd_mirror_perf_stats_prio", "12"), Err(ConfigError::OutOfRange { .. })));
        assert!(matches!(
            c.set("rbd_mirror_image_policy_type", "fancy"),
            Err(ConfigError::OutOfRange { name: "rbd_mirror_image_policy_type", .. })
        ));
        assert!(matches!(
            c.set("rbd_mirroring_max_mirroring_snapshots", "2"),
            Err(ConfigError::OutOfRange { .. })
        ));
        // A refused value changes nothing.
        assert_eq!(c, MirrorConfig::default());
        let e = c.set("rbd_mirror_concurrent_image_syncs", "many").unwrap_err().to_string();
        assert!(e.contains("rbd_mirror_concurrent_image_syncs") && e.contains("many"), "{e}");
    }

    #[test]
    fn every_option_round_trips_through_get_and_set() {
        let mut c = MirrorConfig::default();
        for name in MirrorConfig::names() {
            let v = c.get(name).unwrap_or_else(|| panic!("{name}"));
            c.set(name, &v).unwrap_or_else(|e| panic!("{name} = {v}: {e}"));
            assert_eq!(c.get(name), Some(v), "{name}");
        }
        assert_eq!(c, MirrorConfig::default());
        assert!(MirrorConfig::runtime_updatable("rbd_mirror_concurrent_image_syncs"));
        assert!(!MirrorConfig::runtime_updatable("rbd_mirror_leader_heartbeat_interval"));
        assert!(!MirrorConfig::runtime_updatable("no_such_option"));
    }

    #[test]
    fn ceph_values_as_librados_has_them_are_taken() {
        let ours = MirrorConfig::default();
        // Our defaults where Ceph's differ go to librados as its defaults.
        assert_eq!(
            MirrorConfig::librados_defaults(),
            [
                ("rbd_mirror_journal_commit_age", "1".to_owned()),
                ("rbd_mirror_journal_poll_age", "1".to_owned())
            ]
        );
        // librados prints floats with decimals; a value equal to Ceph's default, set by an
        // operator, is taken as any other.
        let lookup = |name: &str| match name {
            "rbd_mirror_journal_commit_age" => Some("5.000000".to_owned()),
            "rbd_mirror_journal_poll_age" => Some("0.500000".to_owned()),
            "rbd_mirror_concurrent_image_syncs" => Some("3".to_owned()),
            "rbd_mirror_perf_stats_prio" => Some("99".to_owned()),
            "rbd_mirror_delete_retry_interval" => Some("30.000000".to_owned()),
            _ => None,
        };
        let (next, errors) = ours.with_ceph_values(lookup, false);
        assert_eq!(next.rbd_mirror_journal_commit_age, Duration::from_secs(5));
        assert_eq!(next.rbd_mirror_journal_poll_age, Duration::from_millis(500));
        assert_eq!(next.rbd_mirror_concurrent_image_syncs, 3);
        assert_eq!(next.rbd_mirror_delete_retry_interval, Duration::from_secs(30));
        assert_eq!(next.rbd_mirror_perf_stats_prio, 5, "an out-of-range value is refused");
        assert!(matches!(
            errors.as_slice(),
            [ConfigError::OutOfRange { name: "rbd_mirror_perf_stats_prio", .. }]
        ));
        let diff = ours.diff(&next);
        assert_eq!(
            diff,
            [
                ("rbd_mirror_journal_commit_age", "1".to_owned(), "5".to_owned()),
                ("rbd_mirror_journal_poll_age", "1".to_owned(), "0.5".to_owned()),
                ("rbd_mirror_concurrent_image_syncs", "5".to_owned(), "3".to_owned()),
            ]
        );
        // At runtime only the options that apply at runtime move.
        let lookup = |name: &str| match name {
            "rbd_mirror_concurrent_image_syncs" => Some("2".to_owned()),
            "rbd_mirror_leader_heartbeat_interval" => Some("9".to_owned()),
            _ => None,
        };
        let (later, _) = next.with_ceph_values(lookup, true);
        assert_eq!(later.rbd_mirror_concurrent_image_syncs, 2);
        assert_eq!(later.rbd_mirror_leader_heartbeat_interval, Duration::from_secs(5));
        // Removed again (`ceph config rm`): back to the default.
        let (again, _) = later
            .with_ceph_values(|n| (n == "rbd_mirror_concurrent_image_syncs").then(|| "5".to_owned()), true);
        assert_eq!(again.rbd_mirror_concurrent_image_syncs, 5);
        assert!(MirrorConfig::is_mirror_option("rbd-mirror-rs-status-interval"));
        assert!(!MirrorConfig::is_ceph_option("rbd_mirror_rs_status_interval"));
        assert!(!MirrorConfig::is_mirror_option("debug_rbd"));
    }

    #[tokio::test]
    async fn readers_see_runtime_changes() {
        let (handle, mut watch) = ConfigHandle::new(MirrorConfig::default());
        assert!(!handle.update(|_| Ok(())).unwrap(), "no change, no notification");
        assert!(handle.update(|c| c.set("rbd_mirror_concurrent_image_syncs", "2")).unwrap());
        watch.changed().await.unwrap();
        assert_eq!(watch.borrow_and_update().rbd_mirror_concurrent_image_syncs, 2);
        assert!(handle.update(|c| c.set("rbd_mirror_concurrent_image_syncs", "x")).is_err());
        assert_eq!(handle.current().rbd_mirror_concurrent_image_syncs, 2);
        let fixed = fixed(MirrorConfig::default());
        assert_eq!(fixed.borrow().rbd_mirror_concurrent_image_syncs, 5);
    }
}
