//! `rbd-mirror-rs lag` and `failover`: arguments in, `dr-ops` reports out, printed as text
//! or JSON. The logic is `dr-ops`'; this module only connects to the local cluster as the
//! daemon does and prints.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use dr_ops::{FailoverOptions, FailoverReport, LagOptions, LagReport, Level, Outcome};
use rados_ffi::Rados;
use rbd_types::encoding::UTime;

use crate::cli::{Args, FailoverArgs, Format, LagArgs};

/// `lag`: exit 0/1/2/3 for ok/warning/critical/unknown.
pub async fn lag(args: &Args, lag: &LagArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let local = match Rados::connect(&crate::check::local_config(args)).await {
        Ok(r) => r,
        Err(e) => {
            println!("UNKNOWN: {e}");
            return Ok(ExitCode::from(Level::Unknown.exit_code()));
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
    match lag.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Plain => print!("{}", render_lag(&report)),
    }
    Ok(ExitCode::from(report.level.exit_code()))
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
        let last = i.last_sync.map(|t| {
            let sec = u32::try_from(Duration::from_secs_f64(t.max(0.0)).as_secs()).unwrap_or(u32::MAX);
            UTime { sec, nsec: 0 }.utc_string()
        });
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

/// `failover --planned`: exit 0 when every image is primary here (or would be, with
/// `--dry-run`), 1 when one failed, 3 when the pool could not be reached.
pub async fn failover(args: &Args, f: &FailoverArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let local = Rados::connect(&crate::check::local_config(args)).await?;
    let opts = FailoverOptions {
        pool: f.pool.clone(),
        images: f.images.clone(),
        dry_run: f.dry_run,
        sync_timeout: f.sync_timeout,
        concurrency: f.parallel,
        connect_timeout: args.connect_timeout,
    };
    let start = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let progress = move |image: &str, message: &str| {
        let t = start.elapsed().as_secs_f64();
        if tty {
            eprintln!("\x1b[2m[{t:6.1}s]\x1b[0m {image}: {message}");
        } else {
            eprintln!("[{t:6.1}s] {image}: {message}");
        }
    };
    let report = match dr_ops::failover_planned(&local, &opts, &progress).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rbd-mirror-rs failover: {e}");
            return Ok(ExitCode::from(3));
        }
    };
    match f.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Plain => print!("{}", render_failover(&report)),
    }
    Ok(if report.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
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
