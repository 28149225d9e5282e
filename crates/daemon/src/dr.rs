//! `rbd-mirror-rs lag`, `failover`, `failback`, `verify` and `drill`: arguments in, `dr-ops` reports out, printed as text
//! or JSON. The logic is `dr-ops`'; this module only connects to the local cluster as the
//! daemon does and prints.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use dr_ops::{
    DrillOptions, DrillOutcome, DrillReport, FailbackOptions, FailbackOutcome, FailbackReport,
    FailoverOptions, FailoverReport, ForcedOptions, ForcedReport, LagOptions, LagReport, Level, Outcome,
    Scope, VerifyOptions, VerifyOutcome, VerifyReport,
};
use rados_ffi::Rados;
use rbd_types::encoding::UTime;

use crate::cli::{Args, DrillArgs, FailbackArgs, FailoverArgs, Format, LagArgs, VerifyArgs};

/// `lag`: exit 0/1/2/3 for ok/warning/critical/unknown.
pub async fn lag(args: &Args, lag: &LagArgs) -> Result<u8, Box<dyn std::error::Error>> {
    let local = match Rados::connect(&crate::check::local_config(args)).await {
        Ok(r) => r,
        Err(e) => {
            println!("UNKNOWN: {e}");
            return Ok(Level::Unknown.exit_code());
        }
    };
    let opts = LagOptions {
        pools: lag.pools.clone(),
        images: lag.images.clone(),
        warn_secs: lag.warn_secs,
        crit_secs: lag.crit_secs,
        concurrency: lag.parallel,
        connect_timeout: args.connect_timeout,
    };
    let report = dr_ops::lag(&local, &opts).await;
    finish("lag", lag.format, Ok(report), render_lag, |r| r.level.exit_code())
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn render_lag(r: &LagReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let count = |l: Level| r.images.iter().filter(|i| i.level == l).count();
    let _ = writeln!(
        s,
        "{}: {} image(s): {} ok, {} warning, {} critical, {} unknown (warn {} s, crit {} s)",
        r.level.as_str(),
        r.images.len(),
        count(Level::Ok),
        count(Level::Warning),
        count(Level::Critical),
        count(Level::Unknown),
        r.warn_secs,
        r.crit_secs
    );
    for e in &r.errors {
        let _ = writeln!(s, "ERROR: {e}");
    }
    if !r.images.is_empty() {
        let _ = writeln!(
            s,
            "{:<9} {:<32} {:<8} {:<11} {:<18} {:>8} {:>10} {:<20}",
            "LEVEL", "IMAGE", "MODE", "ROLE", "STATE", "BEHIND", "SECONDS", "LAST SYNC"
        );
    }
    for i in &r.images {
        let last = i.last_sync.map(utc);
        let _ = writeln!(
            s,
            "{:<9} {:<32} {:<8} {:<11} {:<18} {:>8} {:>10} {:<20}",
            i.level.as_str(),
            format!("{}/{}", i.pool, i.image),
            i.mode,
            i.role.as_str(),
            i.state.as_deref().unwrap_or("-"),
            opt(i.entries_behind),
            opt(i.seconds_behind.map(|x| format!("{x:.1}"))),
            opt(last),
        );
        if let Some(reason) = &i.reason {
            let _ = writeln!(s, "          {reason}");
        }
    }
    s
}

/// Progress on stderr. Not a TTY: one line per step, `[  12.3s] image: message`. On a TTY
/// the steps scroll the same way (the time dimmed), and a status line below them, redrawn in
/// place four times a second, shows a bar of the images finished (once the command knows how
/// many it works on) and the images that wait (a step that starts with `waiting`, until their
/// next step) with each wait's time, instead of a new line per "still waiting" report. The
/// status line is cleared when the printer is dropped.
struct Printer {
    start: Instant,
    live: Option<LiveLine>,
}

fn progress_printer() -> Printer {
    Printer { start: Instant::now(), live: std::io::stderr().is_terminal().then(LiveLine::start) }
}

impl dr_ops::Progress for Printer {
    fn images(&self, count: usize) {
        if let Some(live) = &self.live {
            let mut waits = live.shared.lock().unwrap_or_else(|p| p.into_inner());
            (waits.total, waits.finished) = (count, 0);
        }
    }

    fn step(&self, image: &str, message: &str) {
        let t = self.start.elapsed().as_secs_f64();
        let Some(live) = &self.live else {
            eprintln!("[{t:6.1}s] {image}: {message}");
            return;
        };
        live.step(image, message, || format!("\x1b[2m[{t:6.1}s]\x1b[0m {image}: {message}"));
    }

    fn finished(&self, image: &str) {
        if let Some(live) = &self.live {
            let mut waits = live.shared.lock().unwrap_or_else(|p| p.into_inner());
            waits.waiting.remove(image);
            waits.finished += 1;
        }
    }
}

/// The pool and images a DR command works on, from its arguments and the daemon's.
fn scope(
    args: &Args,
    pool: &str,
    images: &[String],
    dry_run: bool,
    sync_timeout: Duration,
    parallel: usize,
) -> Scope {
    Scope {
        pool: pool.to_owned(),
        images: images.to_vec(),
        dry_run,
        sync_timeout,
        concurrency: parallel,
        connect_timeout: args.connect_timeout,
    }
}

/// The end of a DR command: its report printed as `format` asks and its exit code (`exit`),
/// or, when the command could not run at all (the pool unreachable), the error and exit 3.
/// The progress printer is gone by then (its status line cleared).
fn finish<R: serde::Serialize>(
    command: &str,
    format: Format,
    report: dr_ops::Result<R>,
    render: fn(&R) -> String,
    exit: fn(&R) -> u8,
) -> Result<u8, Box<dyn std::error::Error>> {
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rbd-mirror-rs {command}: {e}");
            return Ok(3);
        }
    };
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Plain => print!("{}", render(&report)),
    }
    Ok(exit(&report))
}

/// The status line of a TTY's progress: the images finished and waiting, redrawn by a thread
/// of its own.
struct LiveLine {
    shared: std::sync::Arc<std::sync::Mutex<Waits>>,
}

/// The images waiting: when each started to, and on what.
#[derive(Default)]
struct Waits {
    start: Option<Instant>,
    /// Images of the command (of its current phase), and how many are finished.
    total: usize,
    finished: usize,
    waiting: std::collections::BTreeMap<String, (Instant, String)>,
    /// A status line is on the screen.
    shown: bool,
}

impl Waits {
    /// `[  12.3s] [####----------------] 2/10 images; waiting: a 10 s (replayed up to ...),
    /// b 5 s (...)` (the bar once the number of images is known), cut to `width`.
    fn line(&self, now: Instant, width: usize) -> String {
        const BAR: usize = 20;
        let t = self.start.map_or(0.0, |s| now.duration_since(s).as_secs_f64());
        let mut text = format!("[{t:6.1}s]");
        if let Some(full) = (self.finished.min(self.total) * BAR).checked_div(self.total) {
            let bar = format!("{}{}", "#".repeat(full), "-".repeat(BAR - full));
            text += &format!(" [{bar}] {}/{} images", self.finished, self.total);
        }
        if !self.waiting.is_empty() {
            let waits: Vec<String> = self
                .waiting
                .iter()
                .map(|(image, (since, what))| {
                    format!("{image} {:.0} s ({what})", now.duration_since(*since).as_secs_f64())
                })
                .collect();
            let sep = if self.total > 0 { ";" } else { "" };
            text += &format!("{sep} waiting: {}", waits.join(", "));
        }
        text.chars().take(width.saturating_sub(1)).collect()
    }

    /// Replaces the status line by `line` (none: clears it).
    fn redraw(&mut self, line: Option<&str>) {
        use std::io::Write;
        let mut err = std::io::stderr().lock();
        if self.shown {
            let _ = write!(err, "\r\x1b[2K");
        }
        self.shown = line.is_some();
        if let Some(line) = line {
            let _ = write!(err, "{line}");
        }
        let _ = err.flush();
    }
}

impl LiveLine {
    fn start() -> LiveLine {
        let shared = std::sync::Arc::new(std::sync::Mutex::new(Waits {
            start: Some(Instant::now()),
            ..Default::default()
        }));
        let weak = std::sync::Arc::downgrade(&shared);
        let width = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).unwrap_or(100usize);
        // Ends when the printer is dropped.
        let _ = std::thread::Builder::new().name("progress".into()).spawn(move || {
            while let Some(shared) = weak.upgrade() {
                {
                    let mut waits = shared.lock().unwrap_or_else(|p| p.into_inner());
                    if !waits.waiting.is_empty() || waits.total > 0 {
                        let line = waits.line(Instant::now(), width);
                        waits.redraw(Some(&line));
                    }
                }
                drop(shared);
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        LiveLine { shared }
    }

    /// A step of `image`: a line above the status line, unless it only says the image is
    /// still waiting (`waiting (12 s): ...`), which the status line shows.
    fn step(&self, image: &str, message: &str, line: impl FnOnce() -> String) {
        let mut waits = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        match Step::of(message) {
            Step::StillWaiting(waited, what) => {
                let now = Instant::now();
                let since = waits
                    .waiting
                    .get(image)
                    .map_or_else(|| now.checked_sub(waited).unwrap_or(now), |(since, _)| *since);
                waits.waiting.insert(image.to_owned(), (since, what.to_owned()));
                return;
            }
            Step::Waits(what) => {
                waits.waiting.insert(image.to_owned(), (Instant::now(), what.to_owned()));
            }
            Step::Other => {
                waits.waiting.remove(image);
            }
        }
        // Above the status line, which the thread draws again.
        waits.redraw(None);
        eprintln!("{}", line());
    }
}

/// What a progress message says of its image's waiting.
#[derive(Debug, PartialEq, Eq)]
enum Step<'a> {
    /// `waiting (12 s): what`: a report of a wait under way for that long.
    StillWaiting(Duration, &'a str),
    /// `waiting until ...`: a wait starts.
    Waits(&'a str),
    /// Any other step: the wait, if any, is over.
    Other,
}

impl<'a> Step<'a> {
    fn of(message: &'a str) -> Step<'a> {
        let still = message.strip_prefix("waiting (").and_then(|m| m.split_once("): "));
        if let Some((waited, what)) = still {
            let secs = waited.trim_end_matches(" s").parse::<f64>().ok();
            Step::StillWaiting(
                secs.and_then(|s| Duration::try_from_secs_f64(s).ok()).unwrap_or_default(),
                what,
            )
        } else if let Some(what) = message.strip_prefix("waiting ") {
            Step::Waits(what.trim())
        } else {
            Step::Other
        }
    }
}

impl Drop for LiveLine {
    fn drop(&mut self) {
        self.shared.lock().unwrap_or_else(|p| p.into_inner()).redraw(None);
    }
}

/// `failover --planned`: exit 0 when every image is primary here (or would be, with
/// `--dry-run`), 1 when one failed, 3 when the pool could not be reached.
pub async fn failover(args: &Args, f: &FailoverArgs) -> Result<u8, Box<dyn std::error::Error>> {
    let local = Rados::connect(&crate::check::local_config(args)).await?;
    if f.force {
        return failover_forced(&local, f).await;
    }
    let opts: FailoverOptions = scope(args, &f.pool, &f.images, f.dry_run, f.sync_timeout, f.parallel);
    let report = dr_ops::failover_planned(&local, &opts, &progress_printer()).await;
    finish("failover", f.format, report, render_failover, |r| u8::from(r.failed > 0))
}

fn render_failover(r: &FailoverReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}planned failover of pool {} from {} to this site:",
        if r.dry_run { "DRY RUN: " } else { "" },
        r.pool,
        r.peer_site
    );
    for i in &r.images {
        let outcome = match i.outcome {
            Outcome::FailedOver => "failed over",
            Outcome::AlreadyFailedOver => "already failed over",
            Outcome::WouldFailOver => "would fail over",
            Outcome::Failed => "FAILED",
            Outcome::NotStarted => "not started",
        };
        let _ = write!(s, "  {:<32} {:<8} {outcome:<20} {:>7.1} s", i.image, i.mode, i.seconds);
        if let Some(rpo) = i.rpo_seconds {
            let _ = write!(s, "  RPO {rpo} s");
        }
        let _ = writeln!(s, "  (here {}, {} {})", i.local_role.as_str(), r.peer_site, i.peer_role.as_str());
        if !i.steps.is_empty() && i.outcome != Outcome::AlreadyFailedOver {
            let _ = writeln!(s, "      steps: {}", i.steps.join(", "));
        }
        if let Some(e) = &i.error {
            let _ = writeln!(s, "      ERROR: {e}");
        }
    }
    let done = r.images.len() - r.failed;
    let _ =
        writeln!(s, "{done} of {} image(s) done, {} failed, {:.1} s", r.images.len(), r.failed, r.seconds);
    if let Some(next) = &r.next_step {
        let _ = writeln!(s, "next: {next}");
    }
    s
}

/// `failback`: exit 0 when every image is primary here (or would be, with `--dry-run`), 1
/// when one failed or was not finished, 3 when the pool could not be reached.
pub async fn failback(args: &Args, f: &FailbackArgs) -> Result<u8, Box<dyn std::error::Error>> {
    let local = Rados::connect(&crate::check::local_config(args)).await?;
    let opts: FailbackOptions = scope(args, &f.pool, &f.images, f.dry_run, f.sync_timeout, f.parallel);
    let report = dr_ops::failback(&local, &opts, &progress_printer()).await;
    finish("failback", f.format, report, render_failback, |r| u8::from(r.failed > 0))
}

fn render_failback(r: &FailbackReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}failback of pool {} from {} to this site:",
        if r.dry_run { "DRY RUN: " } else { "" },
        r.pool,
        r.peer_site
    );
    for i in &r.images {
        let outcome = match i.outcome {
            FailbackOutcome::FailedBack => "failed back",
            FailbackOutcome::AlreadyFailedBack => "already failed back",
            FailbackOutcome::WouldFailBack => "would fail back",
            FailbackOutcome::Failed => "FAILED",
            FailbackOutcome::NotStarted => "not finished",
        };
        let _ = write!(s, "  {:<32} {:<8} {outcome:<20} {:>7.1} s", i.image, i.mode, i.seconds);
        if let Some(bytes) = i.bytes_copied {
            let _ = write!(s, "  {bytes} bytes copied");
        }
        let _ = writeln!(s, "  (here {}, {} {})", i.local_role.as_str(), r.peer_site, i.peer_role.as_str());
        if !i.steps.is_empty() && i.outcome != FailbackOutcome::AlreadyFailedBack {
            let _ = writeln!(s, "      steps: {}", i.steps.join(", "));
        }
        if let Some(status) = i.local_status.as_deref().filter(|_| i.outcome != FailbackOutcome::FailedBack) {
            let _ = writeln!(s, "      status here: {status}");
        }
        if let Some(e) = &i.error {
            let _ = writeln!(s, "      ERROR: {e}");
        }
    }
    let done = r.images.len() - r.failed;
    let _ = writeln!(
        s,
        "{done} of {} image(s) done, {} failed, {} bytes copied, {:.1} s",
        r.images.len(),
        r.failed,
        r.bytes_copied,
        r.seconds
    );
    if let Some(next) = &r.next_step {
        let _ = writeln!(s, "next: {next}");
    }
    s
}

/// A Unix time as `rbd` prints times (UTC).
fn utc(t: f64) -> String {
    let sec = u32::try_from(Duration::from_secs_f64(t.max(0.0)).as_secs()).unwrap_or(u32::MAX);
    UTime { sec, nsec: 0 }.utc_string()
}

/// `verify`: exit 0 when every image is clean (or would be compared, with `--dry-run`), 1
/// on a mismatch, 2 when an image could not be compared, 3 when the pool could not be
/// reached.
pub async fn verify(args: &Args, v: &VerifyArgs) -> Result<u8, Box<dyn std::error::Error>> {
    let local = Rados::connect(&crate::check::local_config(args)).await?;
    let opts: VerifyOptions = scope(args, &v.pool, &v.images, v.dry_run, v.sync_timeout, v.parallel);
    let report = dr_ops::verify(&local, &opts, &progress_printer()).await;
    finish("verify", v.format, report, render_verify, |r| {
        if r.mismatched > 0 {
            1
        } else if r.failed > 0 {
            2
        } else {
            0
        }
    })
}

fn render_verify(r: &VerifyReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}verify of pool {} against {}:",
        if r.dry_run { "DRY RUN: " } else { "" },
        r.pool,
        r.peer_site
    );
    for i in &r.images {
        let outcome = match i.outcome {
            VerifyOutcome::Clean => "clean",
            VerifyOutcome::Mismatch => "MISMATCH",
            VerifyOutcome::WouldVerify => "would verify",
            VerifyOutcome::Failed => "FAILED",
        };
        let _ = write!(s, "  {:<32} {:<8} {outcome:<12} {:>7.1} s", i.image, i.mode, i.seconds);
        if let Some(p) = &i.point {
            let _ = write!(s, "  at {p}");
            if let Some(t) = i.point_time {
                let _ = write!(s, " of {}", utc(t));
            }
            let _ = write!(s, ", {} objects", i.objects);
        }
        let _ = writeln!(s);
        if i.mismatched_bytes > 0 {
            let _ =
                writeln!(s, "      {} bytes differ in {} objects:", i.mismatched_bytes, i.mismatched_objects);
            for e in &i.mismatches {
                let _ = writeln!(s, "        offset {} length {}", e.offset, e.length);
            }
        }
        if let Some(e) = &i.error {
            let _ = writeln!(s, "      ERROR: {e}");
        }
    }
    let _ = writeln!(
        s,
        "{} image(s): {} mismatched, {} failed, {:.1} s",
        r.images.len(),
        r.mismatched,
        r.failed,
        r.seconds
    );
    s
}

/// `drill`: exit 0 when every image passed (or would be drilled, with `--dry-run`), 1 when
/// one failed (a step or the command), 3 when the pool could not be reached.
pub async fn drill(args: &Args, d: &DrillArgs) -> Result<u8, Box<dyn std::error::Error>> {
    let local = Rados::connect(&crate::check::local_config(args)).await?;
    let mut exec_env = vec![
        ("RBD_MIRROR_DRILL_CLUSTER".to_owned(), args.cluster.clone()),
        ("RBD_MIRROR_DRILL_ID".to_owned(), args.client_id()),
    ];
    if let Some(conf) = &args.conf {
        let conf = std::path::absolute(conf).unwrap_or_else(|_| conf.clone());
        exec_env.push(("RBD_MIRROR_DRILL_CONF".to_owned(), conf.display().to_string()));
    }
    let opts = DrillOptions {
        scope: scope(args, &d.pool, &d.images, d.dry_run, d.sync_timeout, d.parallel),
        scratch_pool: d.scratch_pool.clone(),
        exec: d.exec.clone(),
        exec_env,
    };
    let report = dr_ops::drill(&local, &opts, &progress_printer()).await;
    finish("drill", d.format, report, render_drill, |r| u8::from(r.failed > 0))
}

fn render_drill(r: &DrillReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}drill of pool {} (primaries on {}):",
        if r.dry_run { "DRY RUN: " } else { "" },
        r.pool,
        r.peer_site
    );
    for i in &r.images {
        let outcome = match i.outcome {
            DrillOutcome::Passed => "passed",
            DrillOutcome::CommandFailed => "COMMAND FAILED",
            DrillOutcome::WouldDrill => "would drill",
            DrillOutcome::Failed => "FAILED",
        };
        let _ = write!(s, "  {:<32} {:<8} {outcome:<14} {:>7.1} s", i.image, i.mode, i.seconds);
        if let Some(p) = &i.point {
            let _ = write!(s, "  {p}");
            if let Some(t) = i.point_time {
                let _ = write!(s, " of {}", utc(t));
            }
            let _ = write!(s, " -> {}, {} bytes copied", i.scratch, i.bytes_copied);
        }
        let _ = writeln!(s, "{}", if i.removed { "" } else { "  (scratch image NOT removed)" });
        if let Some(code) = i.exec_status {
            let _ = writeln!(s, "      command exited {code}");
        }
        if let Some(out) = i.exec_output.as_deref().filter(|o| !o.is_empty()) {
            for line in out.lines() {
                let _ = writeln!(s, "      | {line}");
            }
        }
        if let Some(e) = &i.error {
            let _ = writeln!(s, "      ERROR: {e}");
        }
    }
    let _ = writeln!(s, "{} image(s), {} failed, {:.1} s", r.images.len(), r.failed, r.seconds);
    s
}

/// `failover --force`: exit 0 when every image is primary here (or would be, with
/// `--dry-run`), 1 when one failed, 3 when the pool could not be read.
async fn failover_forced(local: &Rados, f: &FailoverArgs) -> Result<u8, Box<dyn std::error::Error>> {
    let opts = ForcedOptions {
        pool: f.pool.clone(),
        images: f.images.clone(),
        dry_run: f.dry_run,
        concurrency: f.parallel,
    };
    let report = dr_ops::failover_forced(local, &opts, &progress_printer()).await;
    finish("failover", f.format, report, render_forced, |r| u8::from(r.failed > 0))
}

fn render_forced(r: &ForcedReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}FORCED failover of pool {} ({} not contacted):",
        if r.dry_run { "DRY RUN: " } else { "" },
        r.pool,
        r.peer_site
    );
    for i in &r.images {
        let outcome = match i.outcome {
            Outcome::FailedOver => "promoted",
            Outcome::AlreadyFailedOver => "already primary",
            Outcome::WouldFailOver => "would promote",
            Outcome::Failed => "FAILED",
            Outcome::NotStarted => "not started",
        };
        let _ = write!(s, "  {:<32} {:<8} {outcome:<16} {:>7.1} s", i.image, i.mode, i.seconds);
        match (i.synced_as_of, i.rpo_seconds) {
            (Some(t), Some(rpo)) => {
                let _ = write!(s, "  data as of {} UTC, RPO {rpo:.1} s", utc(t));
            }
            _ if i.outcome != Outcome::AlreadyFailedOver => {
                let _ = write!(s, "  RPO unknown");
            }
            _ => {}
        }
        let _ = writeln!(s, "  (here {})", i.local_role.as_str());
        if let Some(last) = &i.last_replayed {
            let _ = writeln!(s, "      last replayed: {last}");
        }
        if let Some(e) = &i.error {
            let _ = writeln!(s, "      ERROR: {e}");
        }
    }
    let _ = writeln!(s, "{} image(s), {} failed, {:.1} s", r.images.len(), r.failed, r.seconds);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_steps_say_when_an_image_waits() {
        assert_eq!(
            Step::of("waiting until replayed up to the demotion"),
            Step::Waits("until replayed up to the demotion")
        );
        assert_eq!(
            Step::of("waiting (15 s): replayed to 3/10"),
            Step::StillWaiting(Duration::from_secs(15), "replayed to 3/10")
        );
        assert_eq!(Step::of("promoting here"), Step::Other);
        assert_eq!(Step::of("waiting"), Step::Other);
    }

    #[test]
    fn the_status_line_shows_each_wait_cut_to_the_width() {
        let t0 = Instant::now();
        let mut waits = Waits { start: Some(t0), ..Default::default() };
        waits.waiting.insert("a".into(), (t0, "replayed to 3/10".into()));
        waits.waiting.insert("b".into(), (t0 + Duration::from_secs(2), "synced".into()));
        let now = t0 + Duration::from_secs(12);
        assert_eq!(waits.line(now, 200), "[  12.0s] waiting: a 12 s (replayed to 3/10), b 10 s (synced)");
        assert_eq!(waits.line(now, 21).chars().count(), 20);
    }

    #[test]
    fn the_status_line_shows_a_bar_of_the_images_finished() {
        let t0 = Instant::now();
        let mut waits = Waits { start: Some(t0), total: 10, finished: 3, ..Default::default() };
        let now = t0 + Duration::from_secs(5);
        assert_eq!(waits.line(now, 200), "[   5.0s] [######--------------] 3/10 images");
        waits.waiting.insert("c".into(), (t0, "synced".into()));
        assert_eq!(
            waits.line(now, 200),
            "[   5.0s] [######--------------] 3/10 images; waiting: c 5 s (synced)"
        );
        waits.finished = 10;
        assert!(waits.line(now, 200).starts_with("[   5.0s] [####################] 10/10 images"));
    }
}
