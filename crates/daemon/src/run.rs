//! The daemon's main loop: connect to the local cluster, register in the mgr service map,
//! replicate every mirrored pool from its receiving peers (`peer-manager`), and on SIGTERM /
//! SIGINT stop every image replayer, each committing its replayed position first.

use std::sync::Arc;

use image_replayer::{ConfigHandle, MirrorConfig, Registry};
use rados_ffi::Rados;
use rbd_types::MirrorImageStatusState;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::cli::{Args, MetricsAddr};
use crate::daemonize::Process;

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(args: &Args, process: &mut Process) -> Result<u8, Box<dyn std::error::Error>> {
    let local = Rados::connect(&crate::check::local_config(args)).await?;
    let instance_id = local.instance_id().to_string();
    tracing::info!(cluster = %args.cluster, fsid = %local.fsid(), %instance_id, "connected to the local cluster");

    let cancel = CancellationToken::new();
    let registry = Registry::new();
    // Prometheus `/metrics`: on by default; a default port already taken (another daemon on
    // this host) only costs the endpoint, an address given that cannot be bound stops us.
    let metrics_addr = match args.metrics_addr {
        None => Some((crate::cli::DEFAULT_METRICS_ADDR, false)),
        Some(MetricsAddr::At(addr)) => Some((addr, true)),
        Some(MetricsAddr::Off) => None,
    };
    if let Some((addr, given)) = metrics_addr {
        let handle = crate::prometheus::install(&instance_id, &args.client_id())?;
        match crate::prometheus::bind(addr).await {
            Ok(listener) => {
                tracing::info!(%addr, "serving Prometheus metrics on /metrics");
                tokio::spawn(crate::prometheus::serve(listener, handle, registry.clone(), cancel.clone()));
            }
            Err(e) if !given => {
                tracing::warn!(error = %e, "no Prometheus endpoint (--metrics-addr sets another address)")
            }
            Err(e) => return Err(e.into()),
        }
    }

    // The mgr service map: what `ceph -s` and `rbd mirror pool status` count as daemons.
    let client_id = args.client_id();
    let short_id = client_id.strip_prefix("rbd-mirror.").unwrap_or(&client_id).to_owned();
    let registered = match local
        .service_register("rbd-mirror", &instance_id, &[("id", &short_id), ("instance_id", &instance_id)])
        .await
    {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "cannot register in the mgr service map");
            false
        }
    };

    // The one configuration value: ours from the command line, Ceph's as librados sees them
    // (conf, CEPH_ARGS, command line, monitors). The handle stays here: runtime changes
    // (the monitors' database, polled below) go through it.
    let initial = initial_config(args, &local)?;
    for (name, default, value) in MirrorConfig::default().diff(&initial) {
        tracing::info!(option = name, %value, %default, "configuration");
    }
    let (config, config_watch) = ConfigHandle::new(initial);
    let config = Arc::new(config);

    // The admin socket (`ceph --admin-daemon <path> rbd mirror status`).
    let run_dir = local.conf_get("run_dir").unwrap_or_else(|| "/var/run/ceph".to_owned());
    let name = format!("client.{}", args.client_id());
    let asok_path = crate::asok::path(local.admin_socket(), &run_dir, &args.cluster, &name);
    match crate::asok::bind(&asok_path).await {
        Ok(listener) => {
            tracing::info!(path = %asok_path.display(), "admin socket");
            let ctx = crate::asok::Context {
                registry: registry.clone(),
                config: config.clone(),
                local: local.clone(),
                name,
                cluster: args.cluster.clone(),
                instance_id: instance_id.clone(),
                log_file: process.log_file.clone(),
            };
            tokio::spawn(crate::asok::serve(listener, asok_path, Arc::new(ctx), cancel.clone()));
        }
        Err(e) => tracing::error!("admin socket: {e}"),
    }
    let mut replication = tokio::spawn(peer_manager::run(
        local.clone(),
        config_watch,
        args.connect_timeout,
        registry.clone(),
        cancel.clone(),
    ));

    // The pid file the conf or `--pid-file` names (removed at exit), then systemd is told
    // we are up.
    let _pid_file = match local.conf_get("pid_file").filter(|p| !p.is_empty()) {
        Some(path) => match crate::notify::PidFile::create(path.clone().into()) {
            Ok(f) => Some(f),
            Err(e) => return Err(format!("cannot write the pid file {path}: {e}").into()),
        },
        None => None,
    };
    let notifier = crate::notify::Notifier::from_env();
    notifier.send(&format!("READY=1\nSTATUS={}", status_line(&registry)));
    if let Some(daemon) = process.daemon.take() {
        daemon.started();
    }
    let mut watchdog = notifier.watchdog_interval().map(tokio::time::interval);

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(config.current().rbd_mirror_rs_service_status_interval);
    // Heap memory left free (after an image copy or a replay burst) is given back to the
    // system: without it the daemon keeps its peak footprint for as long as it runs.
    let mut release = tokio::time::interval(config.current().rbd_mirror_rs_memory_release_interval);
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = hup.recv() => {
                // As a Ceph daemon: logs reopened (ours go to stderr: nothing to reopen) and
                // the configuration read again.
                tracing::info!("SIGHUP: reopening the log file, reloading the configuration");
                if let Some(path) = &process.log_file {
                    if let Err(e) = rados_ffi::process::redirect_output(path) {
                        tracing::error!(path = %path.display(), error = %e, "cannot reopen the log file");
                    }
                }
                notifier.send("RELOADING=1");
                refresh_config(&config, &local);
                notifier.send(&format!("READY=1\nSTATUS={}", status_line(&registry)));
            }
            _ = async { watchdog.as_mut()?.tick().await; Some(()) }, if watchdog.is_some() => {
                notifier.send("WATCHDOG=1");
            }
            r = &mut replication => {
                match r {
                    Ok(Ok(())) => tracing::warn!("replication ended"),
                    Ok(Err(e)) => tracing::error!(error = %e, "replication failed"),
                    Err(e) => tracing::error!(error = %e, "replication task failed"),
                }
                return Ok(1);
            }
            _ = release.tick() => {
                rados_ffi::process::release_free_memory();
            }
            _ = tick.tick() => {
                refresh_config(&config, &local);
                notifier.send(&format!("STATUS={}", status_line(&registry)));
                if registered {
                    let json = service_status_json(&registry, &instance_id);
                    if let Err(e) = local.service_update_status(&[("json", &json)]).await {
                        tracing::debug!(error = %e, "service status update failed");
                    }
                }
            }
        }
    }
    notifier.send("STOPPING=1");
    cancel.cancel();
    let grace = config.current().rbd_mirror_rs_shutdown_grace;
    match tokio::time::timeout(grace, replication).await {
        Ok(_) => tracing::info!("all image replayers stopped"),
        Err(_) => tracing::warn!("image replayers did not stop within {grace:?}"),
    }
    Ok(0)
}

/// One line for systemd's `STATUS=`: pools, images, and how many are in error.
fn status_line(registry: &Registry) -> String {
    let s = registry.snapshot();
    let errors = s.images.iter().filter(|(_, i)| i.state == MirrorImageStatusState::Error).count();
    let replaying = s.images.iter().filter(|(_, i)| i.state == MirrorImageStatusState::Replaying).count();
    format!(
        "{} pool replayer(s), {} image(s), {replaying} replaying, {errors} in error",
        s.pools.len(),
        s.images.len()
    )
}

/// The configuration at start: our defaults, our `rbd_mirror_rs_*` options from the command
/// line, then every Ceph option librados has a value for other than Ceph's default. A value
/// that does not parse is an error naming it.
fn initial_config(args: &Args, local: &Rados) -> Result<MirrorConfig, String> {
    let mut ours = MirrorConfig::default();
    for o in args.ceph_options.iter().filter(|o| !MirrorConfig::is_ceph_option(&o.name)) {
        ours.set(&o.name, &o.value).map_err(|e| e.to_string())?;
    }
    let (config, errors) = ours.with_ceph_values(|name| local.conf_get(name), false);
    match errors.first() {
        Some(e) => Err(format!("configuration: {e}")),
        None => Ok(config),
    }
}

/// Takes the changes of runtime options librados has received from the monitors (`ceph
/// config set client.<id> ...`), as the stock daemon applies them without a restart.
fn refresh_config(config: &ConfigHandle, local: &Rados) {
    crate::logging::follow_debug_rbd_mirror(local.conf_get("debug_rbd_mirror"));
    let current = config.current();
    let (next, errors) = current.with_ceph_values(|name| local.conf_get(name), true);
    for e in errors {
        tracing::warn!(error = %e, "configuration change refused");
    }
    let changes = current.diff(&next);
    if changes.is_empty() {
        return;
    }
    if let Err(e) = config.update(|c| {
        *c = next;
        Ok(())
    }) {
        tracing::warn!(error = %e, "configuration change refused");
        return;
    }
    for (name, from, to) in changes {
        tracing::info!(option = name, %from, %to, "configuration changed");
    }
}

/// The service-map status the stock daemon publishes (ceph-formats.md §5.8): per pool id,
/// its name, our instance id, `leader: true` while this instance leads the pool (absent
/// otherwise, as stock removes the attribute) and the default namespace's image counts;
/// each other namespace served, its counts under `namespaces`.
fn service_status_json(registry: &Registry, instance_id: &str) -> String {
    let mut root = serde_json::Map::new();
    let snapshot = registry.snapshot();
    for ((pool, _peer), p) in &snapshot.pools {
        let mut namespaces = serde_json::Map::new();
        let served = p
            .deletions
            .keys()
            .map(String::as_str)
            .chain(snapshot.images_of(pool).map(|(k, _)| k.namespace.as_str()));
        for ns in served.filter(|ns| !ns.is_empty()) {
            if !namespaces.contains_key(ns) {
                let images: Vec<_> = snapshot.images_of(pool).filter(|(k, _)| k.namespace == ns).collect();
                namespaces.insert(ns.to_owned(), image_counts(&images));
            }
        }
        let images: Vec<_> = snapshot.images_of(pool).filter(|(k, _)| k.namespace.is_empty()).collect();
        let mut callouts = serde_json::Map::new();
        if let Some(e) = &p.error {
            callouts.insert("0".into(), serde_json::json!({"level": "error", "text": e}));
        }
        let errors =
            snapshot.images_of(pool).filter(|(_, i)| i.state == MirrorImageStatusState::Error).count();
        if errors > 0 {
            let text = format!("{errors} image(s) in error");
            callouts
                .insert(callouts.len().to_string(), serde_json::json!({"level": "warning", "text": text}));
        }
        let mut entry = serde_json::json!({
            "name": pool,
            "instance_id": instance_id,
        });
        if let (Some(entry), serde_json::Value::Object(counts)) =
            (entry.as_object_mut(), image_counts(&images))
        {
            entry.extend(counts);
        }
        if p.leader.leader {
            entry["leader"] = serde_json::Value::Bool(true);
        }
        if !callouts.is_empty() {
            entry["callouts"] = serde_json::Value::Object(callouts);
        }
        if !namespaces.is_empty() {
            entry["namespaces"] = serde_json::Value::Object(namespaces);
        }
        root.insert(p.pool_id.to_string(), entry);
    }
    serde_json::Value::Object(root).to_string()
}

/// The image counts stock's service-map status has per pool and per namespace.
fn image_counts(images: &[&(image_replayer::ImageKey, image_replayer::ImageState)]) -> serde_json::Value {
    let errors = images.iter().filter(|(_, i)| i.state == MirrorImageStatusState::Error).count();
    serde_json::json!({
        "image_local_count": images.len(),
        "image_remote_count": images.len(),
        "image_assigned_count": images.len(),
        "image_error_count": errors,
        // No image-level warnings are raised (stock's come from an image replayer's
        // health, which has no warning state of ours yet).
        "image_warning_count": 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image_replayer::{ImageKey, PoolState};

    #[test]
    fn service_status_has_the_stock_attributes_per_pool_id() {
        let registry = Registry::new();
        registry
            .add_pool("mirror", PoolState { pool_id: 3, peer_site: "site-a".into(), ..Default::default() });
        let status: serde_json::Value =
            serde_json::from_str(&service_status_json(&registry, "4242")).expect("JSON");
        assert!(status["3"].get("leader").is_none(), "not leading: no leader attribute ({status})");
        registry.set_pool_leader(
            "mirror",
            "site-a",
            image_replayer::LeaderState {
                leader: true,
                leader_instance_id: Some("4242".into()),
                instances: vec!["4242".into()],
            },
        );
        registry
            .image(ImageKey::new("mirror", "", "g1"))
            .update(|s| s.state = MirrorImageStatusState::Replaying);
        registry.image(ImageKey::new("mirror", "", "g2")).update(|s| s.state = MirrorImageStatusState::Error);
        let status: serde_json::Value =
            serde_json::from_str(&service_status_json(&registry, "4242")).expect("JSON");
        let pool = &status["3"];
        assert_eq!(pool["name"], "mirror", "{status}");
        assert_eq!(pool["instance_id"], "4242");
        assert_eq!(pool["leader"], true);
        assert_eq!(pool["image_local_count"], 2);
        assert_eq!(pool["image_assigned_count"], 2);
        assert_eq!(pool["image_error_count"], 1);
        assert_eq!(pool["image_warning_count"], 0);
        assert_eq!(pool["callouts"]["0"]["level"], "warning", "{status}");
        assert!(pool.get("namespaces").is_none(), "{status}");
    }

    #[test]
    fn service_status_counts_each_namespace_apart() {
        let registry = Registry::new();
        registry
            .add_pool("mirror", PoolState { pool_id: 3, peer_site: "site-a".into(), ..Default::default() });
        registry.image(ImageKey::new("mirror", "", "g1"));
        registry
            .image(ImageKey::new("mirror", "ns1", "g2"))
            .update(|s| s.state = MirrorImageStatusState::Error);
        registry.image(ImageKey::new("mirror", "ns1", "g3"));
        let status: serde_json::Value =
            serde_json::from_str(&service_status_json(&registry, "4242")).expect("JSON");
        let pool = &status["3"];
        assert_eq!(pool["image_local_count"], 1, "{status}");
        assert_eq!(pool["image_error_count"], 0, "{status}");
        assert_eq!(pool["namespaces"]["ns1"]["image_local_count"], 2, "{status}");
        assert_eq!(pool["namespaces"]["ns1"]["image_error_count"], 1, "{status}");
        // The pool's callout counts every namespace's images in error.
        assert_eq!(pool["callouts"]["0"]["level"], "warning", "{status}");
    }
}
