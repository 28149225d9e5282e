//! `rbd-mirror-rs lag`, `failover`, `failback`, `verify` and `drill`: arguments in, `dr-ops` reports out, printed as text
//! or JSON. The logic is `dr-ops`'; this module only connects to the local cluster as the
//! daemon does and prints.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use dr_ops::{
    DrillOptions, DrillOutcome, DrillReport, FailbackOptions, FailbackOutcome, FailbackReport,
    FailoverOptions, FailoverReport, ForcedOptions, ForcedReport, LagOptions, LagReport, Level, Outcome,
    VerifyOptions, VerifyOutcome, VerifyReport,
};
use rados_ffi::Rados;
use rbd_types::encoding::UTime;

use crate::cli::{Args, DrillArgs, FailbackArgs, FailoverArgs, Format, LagArgs, VerifyArgs};

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

/// Progress lines on stderr, `[  12.3s] image: message` (the time dimmed on a TTY).
fn progress_printer() -> impl Fn(&str, &str) + Sync {
    let start = Instant::now();
    let tty = std::io::stderr().is_terminal();
    move |image: &str, message: &str| {
        let t = start.elapsed().as_secs_f64();
        if tty {
            eprintln!("\x1b[2m[{t:6.1}s]\x1b[0m {image}: {message}");
        } else {
            eprintln!("[{t:6.1}s] {image}: {message}");
        }
    }
}

/// `failover --planned`: exit 0 when every image is primary here (or would be, with
/// `--dry-run`), 1 when one failed, 3 when the pool could not be reached.
pub async fn failover(args: &Args, f: &FailoverArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let local = Rados::connect(&crate::check::local_config(args)).await?;
    if f.force {
        return failover_forced(&local, f).await;
    }
    let opts = FailoverOptions {
        pool: f.pool.clone(),
        images: f.images.clone(),
        dry_run: f.dry_run,
        sync_timeout: f.sync_timeout,
        concurrency: f.parallel,
        connect_timeout: args.connect_timeout,
    };
    let progress = progress_printer();
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

/// `failback`: exit 0 when every image is primary here (or would be, with `--dry-run`), 1
/// when one failed or was not finished, 3 when the pool could not be reached.
pub async fn failback(args: &Args, f: &FailbackArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let local = Rados::connect(&crate::check::local_config(args)).await?;
    let opts = FailbackOptions {
        pool: f.pool.clone(),
        images: f.images.clone(),
        dry_run: f.dry_run,
        sync_timeout: f.sync_timeout,
        concurrency: f.parallel,
        connect_timeout: args.connect_timeout,
    };
    let report = match dr_ops::failback(&local, &opts, &progress_printer()).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rbd-mirror-rs failback: {e}");
            return Ok(ExitCode::from(3));
        }
    };
    match f.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Plain => print!("{}", render_failback(&report)),
    }
    Ok(if report.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
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
pub async fn verify(args: &Args, v: &VerifyArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let local = Rados::connect(&crate::check::local_config(args)).await?;
    let opts = VerifyOptions {
        pool: v.pool.clone(),
        images: v.images.clone(),
        dry_run: v.dry_run,
        sync_timeout: v.sync_timeout,
        concurrency: v.parallel,
        connect_timeout: args.connect_timeout,
    };
    let report = match dr_ops::verify(&local, &opts, &progress_printer()).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rbd-mirror-rs verify: {e}");
            return Ok(ExitCode::from(3));
        }
    };
    match v.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Plain => print!("{}", render_verify(&report)),
    }
    Ok(ExitCode::from(if report.mismatched > 0 {
        1
    } else if report.failed > 0 {
        2
    } else {
        0
    }))
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
pub async fn drill(args: &Args, d: &DrillArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
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
        pool: d.pool.clone(),
        images: d.images.clone(),
        scratch_pool: d.scratch_pool.clone(),
        exec: d.exec.clone(),
        exec_env,
        dry_run: d.dry_run,
        sync_timeout: d.sync_timeout,
        concurrency: d.parallel,
        connect_timeout: args.connect_timeout,
    };
    let report = match dr_ops::drill(&local, &opts, &progress_printer()).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rbd-mirror-rs drill: {e}");
            return Ok(ExitCode::from(3));
        }
    };
    match d.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Plain => print!("{}", render_drill(&report)),
    }
    Ok(if report.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
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
async fn failover_forced(local: &Rados, f: &FailoverArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let opts = ForcedOptions {
        pool: f.pool.clone(),
        images: f.images.clone(),
        dry_run: f.dry_run,
        concurrency: f.parallel,
    };
    let report = match dr_ops::failover_forced(local, &opts, &progress_printer()).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rbd-mirror-rs failover: {e}");
            return Ok(ExitCode::from(3));
        }
    };
    match f.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Plain => print!("{}", render_forced(&report)),
    }
    Ok(if report.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
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
