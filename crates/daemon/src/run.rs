//! The daemon's main loop.
//!
//! Today it connects to the local cluster, logs what it serves and waits for SIGTERM /
//! SIGINT: image replay arrives with the journal- and snapshot-mode issues, through
//! `peer-manager`. Shutdown is already shaped as it will stay: a signal cancels, then the
//! connections are dropped (which shuts librados down off the runtime threads).

use std::process::ExitCode;

use rados_ffi::{ClusterConfig, Rados};
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::Args;

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(args: &Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut cfg = ClusterConfig::local(&args.cluster, args.conf.clone(), &args.client_id());
    cfg.keyring = args.keyring.clone();
    cfg.connect_timeout = args.connect_timeout;
    let local = Rados::connect(&cfg).await?;
    tracing::info!(
        cluster = %args.cluster,
        fsid = %local.fsid(),
        instance_id = local.instance_id(),
        "connected to the local cluster"
    );
    tracing::warn!("image replay is not implemented yet: this build only checks connectivity (see `rbd-mirror-rs check`)");

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    drop(local);
    Ok(ExitCode::SUCCESS)
}
