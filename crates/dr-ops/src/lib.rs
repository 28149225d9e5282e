//! Disaster-recovery operations on a mirrored pool, run at the secondary site the way the
//! daemon runs there: the local cluster is this site, the peer is reached through the pool's
//! peer record (`peer_manager::discovery`). What an operator's `check-mirror-lag.sh` and
//! `failover.sh` did, as library calls that return typed reports:
//!
//! * [`lag`]: per mirrored image its mode, role, `rbd mirror image status`, entries and
//!   seconds behind the primary, the last sync, and a monitoring level
//!   (ok / warning / critical / unknown) against thresholds;
//! * [`failover_planned`]: demote on the primary, wait until this site has replayed
//!   everything (journal: our commit position at the demotion entry; snapshot: the demotion
//!   snapshot synced), promote here, verify both roles; resumable (every step is decided
//!   from the roles found) and bounded in parallelism;
//! * [`failover_forced`]: the peer unreachable, promote here with force and report from
//!   this site alone what each image holds (the RPO suffered);
//! * [`failback`]: run at the old primary's site after a forced failover and its return:
//!   demote its split-brain images, have the daemon here resync them from the peer, then
//!   [`failover_planned`] back; reports the bytes the resyncs copied;
//! * [`verify`]: compare this site's copies with their primaries at a consistent point
//!   (snapshot mode: the newest synced mirror snapshot; journal mode: a snapshot made on
//!   the primary and replayed here) object by object, naming differing extents;
//! * [`drill`]: copy this site's copy at its newest consistent point into a scratch image,
//!   run a command against it, remove it, without touching replication.
//!
//! Each command works on a [`Scope`] (the pool, its images, `--dry-run`, waits, parallelism)
//! and tells a [`Progress`] listener how many images it has, each one's steps and when each is
//! finished.
//!
//! It owns the DR logic and its reports (serialisable for `--format json`). It does not
//! parse command lines, print, build a runtime or read process configuration (the `daemon`
//! crate does), does not replicate (`image-replayer`), and calls librbd only through
//! `rados-ffi` and cls `rbd` only through `image_replayer::cls`.
#![forbid(unsafe_code)]

mod consistent;
mod drill;
mod error;
mod failback;
mod failover;
mod forced;
mod journal;
mod lag;
mod progress;
mod promotion;
mod sites;
mod verify;

pub use drill::{drill, DrillOptions, DrillOutcome, DrillReport, ImageDrill};
pub use error::{DrError, Result};
pub use failback::{failback, FailbackOptions, FailbackOutcome, FailbackReport, ImageFailback};
pub use failover::{failover_planned, FailoverOptions, FailoverReport, ImageFailover, Outcome};
pub use forced::{failover_forced, ForcedOptions, ForcedReport, ImageForced};
pub use lag::{lag, ImageLag, LagOptions, LagReport, Level};
pub use progress::Progress;
pub use sites::{Role, Scope};
pub use verify::{verify, Extent, ImageVerify, VerifyOptions, VerifyOutcome, VerifyReport};
