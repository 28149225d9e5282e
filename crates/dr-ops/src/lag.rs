//! `lag`: how far this site's copy of each mirrored image is behind its primary, as a
//! monitoring plugin reports it.
//!
//! What the numbers mean:
//! * journal mode, read on the primary's journal header: `entries_behind` = librbd's
//!   committed position (client `""`) minus ours (client = local pool's mirror uuid),
//!   exact within one tag (see [`crate::journal`]); `seconds_behind` = 0 when no entry is
//!   behind, else the age of the oldest entry we have not replayed (its `EventEntry`
//!   timestamp, read from the data objects after our position); `last_sync` = now when
//!   caught up, else the timestamp of the newest replayed entry;
//! * snapshot mode: `last_sync` = the primary timestamp of the primary mirror snapshot that
//!   the newest complete non-primary mirror snapshot here copies; `seconds_behind` = its
//!   age (the writes at risk if the primary were lost now, even when no newer mirror
//!   snapshot exists yet); `entries_behind` = primary mirror snapshots newer than it.
//!
//! The level of an image: critical when `seconds_behind` ≥ the critical threshold or the
//! local status is `error`; warning when ≥ the warning threshold or the status is not `up`
//! (no daemon reports it); unknown when a number could not be computed; else ok. An image
//! that is primary here is ok (nothing to replay). The report's level is the worst,
//! critical > warning > unknown > ok.

use std::time::{Duration, SystemTime};

use futures::stream::{self, StreamExt};
use rados_ffi::rbd::Image;
use rados_ffi::Rados;
use rbd_types::cls_rbd::MirrorImageMode;
use rbd_types::snap_namespace::SnapshotNamespace;
use serde::Serialize;

use crate::consistent::{newest_complete_copy, unix_secs};
use crate::error::{DrError, Result};
use crate::journal;
use crate::sites::{self, MirroredImage, PoolPair, Role};

/// What `lag` looks at and its thresholds.
#[derive(Debug, Clone)]
pub struct LagOptions {
    /// Pools (empty: every mirrored pool).
    pub pools: Vec<String>,
    /// Image names (empty: every mirrored image).
    pub images: Vec<String>,
    /// Seconds behind from which an image is a warning.
    pub warn_secs: f64,
    /// Seconds behind from which an image is critical.
    pub crit_secs: f64,
    /// Images looked at at once.
    pub concurrency: usize,
    /// Time allowed to reach each peer.
    pub connect_timeout: Duration,
}

/// A monitoring level, as Nagios-style plugins exit with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// 0.
    Ok,
    /// 1.
    Warning,
    /// 2.
    Critical,
    /// 3.
    Unknown,
}

impl Level {
    /// The plugin exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Level::Ok => 0,
            Level::Warning => 1,
            Level::Critical => 2,
            Level::Unknown => 3,
        }
    }

    /// `OK`, `WARNING`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warning => "WARNING",
            Level::Critical => "CRITICAL",
            Level::Unknown => "UNKNOWN",
        }
    }

    fn rank(self) -> u8 {
        match self {
            Level::Ok => 0,
            Level::Unknown => 1,
            Level::Warning => 2,
            Level::Critical => 3,
        }
    }

    /// The worse of two levels (critical > warning > unknown > ok).
    pub fn worst(self, other: Level) -> Level {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }
}

/// One image's lag.
#[derive(Debug, Clone, Serialize)]
pub struct ImageLag {
    /// Pool name.
    pub pool: String,
    /// Image name.
    pub image: String,
    /// Global image id.
    pub global_id: String,
    /// `journal` or `snapshot`.
    pub mode: &'static str,
    /// Role here.
    pub role: Role,
    /// Local `rbd mirror image status` state (`up+replaying`), if recorded.
    pub state: Option<String>,
    /// Its description.
    pub description: Option<String>,
    /// Journal entries (journal mode) or primary mirror snapshots (snapshot mode) not yet
    /// here.
    pub entries_behind: Option<u64>,
    /// See the module documentation.
    pub seconds_behind: Option<f64>,
    /// Unix time of the last sync (see the module documentation).
    pub last_sync: Option<f64>,
    /// Level against the thresholds.
    pub level: Level,
    /// Why the level is not ok, or why a number is missing.
    pub reason: Option<String>,
}

/// Everything `lag` found.
#[derive(Debug, Serialize)]
pub struct LagReport {
    /// The thresholds used.
    pub warn_secs: f64,
    /// The thresholds used.
    pub crit_secs: f64,
    /// One entry per image.
    pub images: Vec<ImageLag>,
    /// Pools or peers that could not be read.
    pub errors: Vec<String>,
    /// The worst level (unknown when a pool could not be read).
    pub level: Level,
}

/// Measures the lag of every selected image of every selected pool of `local`.
pub async fn lag(local: &Rados, opts: &LagOptions) -> LagReport {
    let mut report = LagReport {
        warn_secs: opts.warn_secs,
        crit_secs: opts.crit_secs,
        images: Vec::new(),
        errors: Vec::new(),
        level: Level::Ok,
    };
    let pairs = match sites::connect_pools(local, &opts.pools, opts.connect_timeout).await {
        Ok((pairs, errors)) => {
            report.errors.extend(errors.iter().map(ToString::to_string));
            pairs
        }
        Err(e) => {
            report.errors.push(e.to_string());
            Vec::new()
        }
    };
    for pair in &pairs {
        let images = match sites::mirrored_images(pair, &opts.images).await {
            Ok(i) => i,
            Err(e) => {
                report.errors.push(e.to_string());
                continue;
            }
        };
        let lags: Vec<ImageLag> = stream::iter(images)
            .map(|image| image_lag(pair, image, opts))
            .buffered(opts.concurrency.max(1))
            .collect()
            .await;
        report.images.extend(lags);
    }
    if !report.errors.is_empty() || (report.images.is_empty() && !opts.images.is_empty()) {
        report.level = Level::Unknown;
    }
    report.level = report.images.iter().fold(report.level, |l, i| l.worst(i.level));
    report
}

fn age_secs(t: SystemTime, now: SystemTime) -> f64 {
    now.duration_since(t).map_or(0.0, |d| d.as_secs_f64())
}

/// The numbers one mode gives: (entries behind, seconds behind, last sync, why a number is
/// missing).
type Measure = (Option<u64>, Option<f64>, Option<f64>, Option<String>);

async fn image_lag(pair: &PoolPair, image: MirroredImage, opts: &LagOptions) -> ImageLag {
    let mut out = ImageLag {
        pool: pair.pool.clone(),
        image: image.name.clone(),
        global_id: image.global_id.clone(),
        mode: image.mode.as_str(),
        role: Role::Missing,
        state: None,
        description: None,
        entries_behind: None,
        seconds_behind: None,
        last_sync: None,
        level: Level::Unknown,
        reason: None,
    };
    match measure(pair, &image, &mut out).await {
        Ok(Some((entries, secs, last, why))) => {
            out.entries_behind = entries;
            out.seconds_behind = secs;
            out.last_sync = last;
            out.reason = why;
        }
        Ok(None) => {}
        Err(e) => out.reason = Some(e.to_string()),
    }
    out.level = level(&out, opts);
    out
}

/// Fills role and status; `None` when there is nothing to measure (primary here).
async fn measure(pair: &PoolPair, image: &MirroredImage, out: &mut ImageLag) -> Result<Option<Measure>> {
    let io = &pair.conn.local_io;
    let Some(local_id) = image.local_id.as_deref() else {
        return Err(DrError::Image {
            image: format!("{}/{}", pair.pool, image.name),
            reason: format!("no local image yet (not created from {})", pair.peer_site),
        });
    };
    out.role = sites::role(io, Some(local_id)).await?;
    if let Some((state, description)) = sites::local_status(io, local_id).await? {
        out.state = Some(state);
        out.description = Some(description);
    }
    if out.role == Role::Primary {
        return Ok(None);
    }
    let Some(remote_id) = image.remote_id.as_deref() else {
        return Err(DrError::Image {
            image: format!("{}/{}", pair.pool, image.name),
            reason: format!("{} has no such image", pair.peer_site),
        });
    };
    let now = SystemTime::now();
    match image.mode {
        MirrorImageMode::Journal => journal_measure(pair, remote_id, now).await.map(Some),
        MirrorImageMode::Snapshot => snapshot_measure(pair, local_id, remote_id, now).await.map(Some),
    }
}

async fn journal_measure(pair: &PoolPair, remote_id: &str, now: SystemTime) -> Result<Measure> {
    let io = &pair.conn.remote_io;
    let wrap = |source| DrError::Journal {
        image: format!("{}/{remote_id} on {}", pair.pool, pair.peer_site),
        source,
    };
    let pos = journal::positions(io, remote_id, &pair.conn.local_mirror_uuid).await.map_err(wrap)?;
    let Some(behind) = pos.entries_behind() else {
        let why = if pos.registered {
            "no replay position yet"
        } else {
            "this site's journal client is not registered"
        };
        return Ok((None, None, None, Some(why.into())));
    };
    if behind == 0 {
        return Ok((Some(0), Some(0.0), Some(unix_secs(now)), None));
    }
    let Some(replayed) = pos.replayed else { return Ok((Some(behind), None, None, None)) };
    let times = journal::entry_times(io, remote_id, &pos.header, replayed).await.map_err(wrap)?;
    let why =
        times.oldest_unreplayed.is_none().then(|| "the oldest unreplayed entry was not found".to_owned());
    Ok((
        Some(behind),
        times.oldest_unreplayed.map(|t| age_secs(t, now)),
        times.last_replayed.map(unix_secs),
        why,
    ))
}

async fn snapshot_measure(
    pair: &PoolPair,
    local_id: &str,
    remote_id: &str,
    now: SystemTime,
) -> Result<Measure> {
    let local = Image::open_by_id(&pair.conn.local_io, local_id, None).await?.snapshots().await?;
    let synced = newest_complete_copy(&local).map(|(_, primary_snap_id)| primary_snap_id);
    let remote = Image::open_by_id(&pair.conn.remote_io, remote_id, None).await?.snapshots().await?;
    let primary_snaps: Vec<_> = remote
        .iter()
        .filter(|s| matches!(&s.namespace, SnapshotNamespace::Mirror(m) if m.state.is_primary()))
        .collect();
    let Some(synced) = synced else {
        return Ok((
            Some(primary_snaps.len() as u64),
            None,
            None,
            Some("no mirror snapshot synced yet".into()),
        ));
    };
    let behind = primary_snaps.iter().filter(|s| s.id > synced).count() as u64;
    let Some(time) = remote.iter().find(|s| s.id == synced).and_then(|s| s.timestamp) else {
        return Ok((
            Some(behind),
            None,
            None,
            Some(format!("primary snapshot {synced} is gone on the peer")),
        ));
    };
    Ok((Some(behind), Some(age_secs(time, now)), Some(unix_secs(time)), None))
}

fn level(image: &ImageLag, opts: &LagOptions) -> Level {
    if image.role == Role::Primary {
        return Level::Ok;
    }
    let state = image.state.as_deref().unwrap_or("");
    let mut level = match image.seconds_behind {
        Some(s) if s >= opts.crit_secs => Level::Critical,
        Some(s) if s >= opts.warn_secs => Level::Warning,
        Some(_) => Level::Ok,
        None => Level::Unknown,
    };
    if state.ends_with("+error") {
        level = level.worst(Level::Critical);
    } else if !state.starts_with("up+") {
        level = level.worst(Level::Warning);
    }
    level
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(state: &str, secs: Option<f64>) -> ImageLag {
        ImageLag {
            pool: "mirror".into(),
            image: "i".into(),
            global_id: "g".into(),
            mode: "journal",
            role: Role::NonPrimary,
            state: Some(state.into()),
            description: None,
            entries_behind: None,
            seconds_behind: secs,
            last_sync: None,
            level: Level::Unknown,
            reason: None,
        }
    }

    fn opts() -> LagOptions {
        LagOptions {
            pools: vec![],
            images: vec![],
            warn_secs: 30.0,
            crit_secs: 300.0,
            concurrency: 1,
            connect_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn levels_follow_thresholds_and_status() {
        let o = opts();
        assert_eq!(level(&image("up+replaying", Some(0.0)), &o), Level::Ok);
        assert_eq!(level(&image("up+replaying", Some(30.0)), &o), Level::Warning);
        assert_eq!(level(&image("up+replaying", Some(301.0)), &o), Level::Critical);
        assert_eq!(level(&image("up+replaying", None), &o), Level::Unknown);
        assert_eq!(level(&image("down+replaying", Some(0.0)), &o), Level::Warning);
        assert_eq!(level(&image("up+error", Some(0.0)), &o), Level::Critical);
        assert_eq!(level(&image("down+replaying", None), &o), Level::Warning);
        let mut p = image("up+stopped", None);
        p.role = Role::Primary;
        assert_eq!(level(&p, &o), Level::Ok);
    }

    #[test]
    fn worst_level_and_exit_codes() {
        assert_eq!(Level::Ok.worst(Level::Unknown), Level::Unknown);
        assert_eq!(Level::Unknown.worst(Level::Warning), Level::Warning);
        assert_eq!(Level::Critical.worst(Level::Unknown), Level::Critical);
        let codes: Vec<u8> = [Level::Ok, Level::Warning, Level::Critical, Level::Unknown]
            .iter()
            .map(|l| l.exit_code())
            .collect();
        assert_eq!(codes, [0, 1, 2, 3]);
    }
}
