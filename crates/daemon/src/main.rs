//! `rbd-mirror-rs`: the daemon binary.
//!
//! Owns process-level concerns and nothing of replication itself: the command line (which
//! accepts the stock `rbd-mirror` arguments as they are: `--cluster`, `-c`, `--id`/`-n`,
//! `-f`), logging, the tokio runtime, signals, and operator subcommands such as `check`, `lag` and `failover` (whose logic is `dr-ops`').
//! Replication lives in `image-replayer` and `peer-manager`; cluster access in `rados-ffi`.
//! Only this crate builds a runtime and will know about Prometheus, the admin socket and
//! systemd (see ARCHITECTURE.md).
#![forbid(unsafe_code)]

mod asok;
mod check;
mod cli;
mod daemonize;
mod dr;
mod logging;
mod notify;
mod prometheus;
mod run;

use std::process::ExitCode;

fn main() -> ExitCode {
    // librados' static initializers touched ~1 MiB of this stack before `main`: give it back.
    let stack_released = rados_ffi::process::release_unused_main_stack();
    let args = cli::parse(std::env::args_os()).unwrap_or_else(|e| e.exit());
    // Detached (and output to the log file) before any thread starts.
    let mut process = daemonize::Process::default();
    if matches!(args.command, None | Some(cli::Command::Run)) {
        match daemonize::setup(&args) {
            Ok(p) => process = p,
            Err(e) => {
                eprintln!("rbd-mirror-rs: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    // `debug_rbd_mirror` as librados reads it (conf, CEPH_ARGS, command line): the log level.
    let debug_rbd_mirror = check::local_config(&args)
        .conf_values(&["debug_rbd_mirror"])
        .ok()
        .and_then(|v| v.into_iter().next().flatten());
    logging::init(&args.log_level, debug_rbd_mirror);
    if matches!(args.command, None | Some(cli::Command::Run)) {
        if let Err(e) = daemonize::become_user(&args, &process) {
            tracing::error!("{e}");
            if let Some(console) = &mut process.console {
                let _ = std::io::Write::write_fmt(console, format_args!("rbd-mirror-rs: {e}\n"));
            }
            return ExitCode::FAILURE;
        }
    }
    tracing::debug!(stack_released, "unused main stack given back");
    match rados_ffi::process::allocator_settings() {
        Some(a) => tracing::debug!(
            narenas = a.narenas,
            tcache = a.tcache,
            tcache_max = a.tcache_max,
            dirty_decay_ms = a.dirty_decay_ms,
            "allocator: jemalloc"
        ),
        None => tracing::warn!("jemalloc does not answer: memory use may grow with image syncs"),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(
            args.worker_threads
                .unwrap_or_else(|| {
                    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
                    cli::default_worker_threads(cpus)
                })
                .max(1),
        )
        .thread_name("rbd-mirror-rs")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rbd-mirror-rs: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match &args.command {
            Some(cli::Command::Check(check_args)) => check::run(&args, check_args).await,
            Some(cli::Command::Lag(lag_args)) => dr::lag(&args, lag_args).await,
            Some(cli::Command::Failover(failover_args)) => dr::failover(&args, failover_args).await,
            Some(cli::Command::Failback(failback_args)) => dr::failback(&args, failback_args).await,
            Some(cli::Command::Verify(verify_args)) => dr::verify(&args, verify_args).await,
            Some(cli::Command::Drill(drill_args)) => dr::drill(&args, drill_args).await,
            None | Some(cli::Command::Run) => run::run(&args, &mut process).await,
        }
    });
    // What still runs is given up: positions were committed within the shutdown grace, and
    // a blocking librados call (a connection to a peer whose monitors do not answer) would
    // otherwise hold the exit until it returns. The teardowns of what was dropped
    // (`rados_shutdown`, which joins a cluster's threads) are waited for (a bounded while):
    // exiting during one runs librados' static destructors beside it (the likely cause of
    // `check` failing once on a loaded machine after printing a clean report).
    let teardown_deadline = std::time::Instant::now() + TEARDOWN_WAIT;
    while rados_ffi::teardowns_in_flight() > 0 && std::time::Instant::now() < teardown_deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    let code = exit_code(result, &mut process);
    let (calls, teardowns) = (rados_ffi::blocking_calls_in_flight(), rados_ffi::teardowns_in_flight());
    if calls + teardowns > 0 {
        tracing::warn!(calls, teardowns, "exiting with librados calls still under way (given up)");
        rados_ffi::process::exit_leaving_calls(code);
    }
    ExitCode::from(code)
}

/// How long the exit waits for the teardowns of dropped cluster handles.
const TEARDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The process's exit status for what its command returned (an error is logged, and said
/// where the daemon was started from).
fn exit_code(result: Result<u8, Box<dyn std::error::Error>>, process: &mut daemonize::Process) -> u8 {
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            // Also where we were started from, when output went to the log file.
            match &mut process.console {
                Some(console) => {
                    let _ = std::io::Write::write_fmt(console, format_args!("rbd-mirror-rs: {e}\n"));
                }
                None => eprintln!("rbd-mirror-rs: {e}"),
            }
            1
        }
    }
}
