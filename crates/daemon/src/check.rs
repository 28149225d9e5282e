//! `rbd-mirror-rs check`: can this daemon reach everything it would mirror?
//!
//! Connects to the local cluster and, for every mirrored pool, to each peer the way the
//! daemon will (peer attributes `mon_host` + `key` from the config-key store when present,
//! else the peer's own `<site>.conf` and keyring on the default search path), and reports
//! fsids, mirror modes, mirror uuids and peers. Each failure is reported where it happens
//! and does not stop the rest; the exit status is 1 when anything failed.

use image_replayer::MirrorConfig;
use rados_ffi::rbd::MirrorPeerSite;
use rados_ffi::{ClusterConfig, Rados};
use rbd_types::MirrorMode;
use serde::Serialize;

use crate::cli::{Args, CheckArgs, Format};

/// Everything `check` found, serialised as-is for `--format json`.
#[derive(Debug, Serialize)]
pub struct Report {
    cluster: String,
    client: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fsid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    site_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    pools: Vec<PoolReport>,
    errors: usize,
}

#[derive(Debug, Serialize)]
struct PoolReport {
    pool: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mirror_uuid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    peers: Vec<PeerReport>,
}

#[derive(Debug, Serialize)]
struct PeerReport {
    uuid: String,
    site_name: String,
    direction: String,
    client_name: String,
    mirror_uuid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    mon_host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fsid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote_mirror_uuid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Runs `check` and prints the report.
pub async fn run(args: &Args, check: &CheckArgs) -> Result<u8, Box<dyn std::error::Error>> {
    let report = build_report(args, check).await;
    match check.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Plain => print!("{}", render_plain(&report)),
    }
    Ok(u8::from(report.errors != 0))
}

/// `--default-<option> <value>`: the option's default, as Ceph's command line takes it.
const CEPH_DEFAULT_PREFIX: &str = "default_";

pub(crate) fn local_config(args: &Args) -> ClusterConfig {
    let mut cfg = ClusterConfig::local(&args.cluster, args.conf.clone(), &args.client_id());
    cfg.keyring = args.keyring.clone();
    cfg.connect_timeout = args.connect_timeout;
    // The daemon serves the configured admin socket itself (`asok`), librados none.
    cfg.own_admin_socket = true;
    // Defaults under the conf: a daemon's log file, which librados (a library) lacks (the
    // stock daemon logs there unless told otherwise; `log file =` for none), our log level,
    // ours where we
    // change Ceph's, then those of the command line (`--default-log-to-file=false`, as
    // cephadm starts the stock daemon).
    cfg.defaults = vec![
        ("log_file".into(), crate::daemonize::DAEMON_LOG_FILE.into()),
        ("debug_rbd_mirror".into(), crate::logging::DEFAULT_DEBUG_RBD_MIRROR.into()),
    ];
    cfg.defaults.extend(MirrorConfig::librados_defaults().into_iter().map(|(n, v)| (n.to_owned(), v)));
    let (defaults, options): (Vec<_>, Vec<_>) =
        args.ceph_options.iter().partition(|o| o.name.starts_with(CEPH_DEFAULT_PREFIX));
    cfg.defaults.extend(
        defaults.into_iter().map(|o| (o.name[CEPH_DEFAULT_PREFIX.len()..].to_owned(), o.value.clone())),
    );
    // `--no-mon-config` is an argument of Ceph's command line, not an option.
    let (no_mon_config, options): (Vec<_>, Vec<_>) =
        options.into_iter().partition(|o| o.name == "no_mon_config");
    cfg.no_mon_config = no_mon_config.iter().any(|o| o.value != "false");
    // Ceph options from the command line go to librados (which checks them), but for ours.
    cfg.options = options
        .into_iter()
        .filter(|o| MirrorConfig::is_ceph_option(&o.name))
        .map(|o| (o.name.clone(), o.value.clone()))
        .collect();
    cfg
}

async fn build_report(args: &Args, check: &CheckArgs) -> Report {
    let mut report = Report {
        cluster: args.cluster.clone(),
        client: format!("client.{}", args.client_id()),
        fsid: None,
        site_name: None,
        error: None,
        pools: Vec::new(),
        errors: 0,
    };
    let local = match Rados::connect(&local_config(args)).await {
        Ok(r) => r,
        Err(e) => {
            report.error = Some(e.to_string());
            report.errors = 1;
            return report;
        }
    };
    report.fsid = Some(local.fsid().to_owned());
    match local.mirror_site_name().await {
        Ok(s) => report.site_name = Some(s),
        Err(e) => report.error = Some(format!("reading the site name: {e}")),
    }

    let explicit = !check.pools.is_empty();
    let pools = if explicit {
        check.pools.clone()
    } else {
        match local.pool_list().await {
            Ok(p) => p,
            Err(e) => {
                report.error = Some(e.to_string());
                report.errors = 1;
                return report;
            }
        }
    };
    for pool in pools {
        if let Some(p) = check_pool(args, &local, &pool, explicit).await {
            report.pools.push(p);
        }
    }
    report.errors = usize::from(report.error.is_some())
        + report
            .pools
            .iter()
            .map(|p| usize::from(p.error.is_some()) + p.peers.iter().filter(|x| x.error.is_some()).count())
            .sum::<usize>();
    report
}

/// One pool's report; `None` for a pool without mirroring that was not asked for by name.
async fn check_pool(args: &Args, local: &Rados, pool: &str, explicit: bool) -> Option<PoolReport> {
    let mut rep =
        PoolReport { pool: pool.to_owned(), mode: None, mirror_uuid: None, error: None, peers: Vec::new() };
    let io = match local.ioctx(pool, "").await {
        Ok(io) => io,
        Err(e) => {
            rep.error = Some(e.to_string());
            return Some(rep);
        }
    };
    let mode = match io.mirror_mode().await {
        Ok(m) => m,
        // Pools that are not RBD pools (e.g. .mgr) have no mirroring object at all.
        Err(e) if !explicit && e.is_not_found() => return None,
        Err(e) => {
            rep.error = Some(e.to_string());
            return Some(rep);
        }
    };
    if mode == MirrorMode::Disabled {
        if !explicit {
            return None;
        }
        rep.mode = Some(mode.as_str().to_owned());
        rep.error = Some(format!("mirroring is disabled on pool {pool}"));
        return Some(rep);
    }
    rep.mode = Some(mode.as_str().to_owned());
    match io.mirror_uuid().await {
        Ok(u) => rep.mirror_uuid = Some(u),
        Err(e) => rep.error = Some(e.to_string()),
    }
    let peers = match io.mirror_peer_sites().await {
        Ok(p) => p,
        Err(e) => {
            rep.error = Some(e.to_string());
            return Some(rep);
        }
    };
    for peer in peers {
        rep.peers.push(check_peer(args, &io, pool, peer).await);
    }
    Some(rep)
}

async fn check_peer(args: &Args, io: &rados_ffi::IoCtx, pool: &str, peer: MirrorPeerSite) -> PeerReport {
    let mut rep = PeerReport {
        uuid: peer.uuid.clone(),
        site_name: peer.site_name.clone(),
        direction: peer.direction.as_str().to_owned(),
        client_name: peer.client_name.clone(),
        mirror_uuid: peer.mirror_uuid.clone(),
        mon_host: None,
        fsid: None,
        remote_mode: None,
        remote_mirror_uuid: None,
        error: None,
    };
    let cfg = match peer_manager::discovery::peer_cluster_config(io, &peer, args.connect_timeout).await {
        Ok(c) => c,
        Err(e) => {
            rep.error = Some(format!("reading the peer's mon_host/key: {e}"));
            return rep;
        }
    };
    rep.mon_host = cfg.mon_host.clone();
    let remote = match Rados::connect(&cfg).await {
        Ok(r) => r,
        Err(e) => {
            rep.error = Some(format!("peer {}: {e}", peer.site_name));
            return rep;
        }
    };
    rep.fsid = Some(remote.fsid().to_owned());
    let remote_io = match remote.ioctx(pool, io.namespace()).await {
        Ok(r) => r,
        Err(e) => {
            rep.error = Some(format!("peer {}: {e}", peer.site_name));
            return rep;
        }
    };
    match remote_io.mirror_mode().await {
        Ok(m) => {
            if m == MirrorMode::Disabled {
                rep.error =
                    Some(format!("peer {}: mirroring is disabled on its pool {pool}", peer.site_name));
            }
            rep.remote_mode = Some(m.as_str().to_owned());
        }
        Err(e) => rep.error = Some(format!("peer {}: {e}", peer.site_name)),
    }
    match remote_io.mirror_uuid().await {
        Ok(u) => {
            if !peer.mirror_uuid.is_empty() && u != peer.mirror_uuid && rep.error.is_none() {
                rep.error = Some(format!(
                    "peer {}: its pool's mirror uuid is {u}, but the local peer record says {}",
                    peer.site_name, peer.mirror_uuid
                ));
            }
            rep.remote_mirror_uuid = Some(u);
        }
        Err(e) => rep.error = rep.error.take().or(Some(format!("peer {}: {e}", peer.site_name))),
    }
    rep
}

fn render_plain(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = write!(s, "cluster {} ({})", r.cluster, r.client);
    if let Some(fsid) = &r.fsid {
        let _ = write!(s, ": fsid {fsid}");
    }
    if let Some(site) = &r.site_name {
        let _ = write!(s, ", site name {site}");
    }
    s.push('\n');
    if let Some(e) = &r.error {
        let _ = writeln!(s, "  ERROR: {e}");
    }
    if r.fsid.is_some() && r.pools.is_empty() {
        let _ = writeln!(s, "  no pool has mirroring enabled");
    }
    for p in &r.pools {
        let _ = write!(s, "pool {}", p.pool);
        if let Some(m) = &p.mode {
            let _ = write!(s, ": mode {m}");
        }
        if let Some(u) = &p.mirror_uuid {
            let _ = write!(s, ", mirror uuid {u}");
        }
        s.push('\n');
        if let Some(e) = &p.error {
            let _ = writeln!(s, "  ERROR: {e}");
        }
        if p.error.is_none() && p.peers.is_empty() {
            let _ = writeln!(s, "  no peers");
        }
        for peer in &p.peers {
            let _ = writeln!(
                s,
                "  peer {} site {} direction {} client {}",
                peer.uuid, peer.site_name, peer.direction, peer.client_name
            );
            if let Some(m) = &peer.mon_host {
                let _ = writeln!(s, "    mon_host {m}");
            }
            if let Some(f) = &peer.fsid {
                let _ = write!(s, "    fsid {f}");
                if let Some(m) = &peer.remote_mode {
                    let _ = write!(s, ", pool {} mode {m}", p.pool);
                }
                if let Some(u) = &peer.remote_mirror_uuid {
                    let _ = write!(s, ", mirror uuid {u}");
                }
                s.push('\n');
            }
            if let Some(e) = &peer.error {
                let _ = writeln!(s, "    ERROR: {e}");
            }
        }
    }
    let npeers: usize = r.pools.iter().map(|p| p.peers.len()).sum();
    let _ = writeln!(s, "check: {} pool(s), {} peer(s), {} error(s)", r.pools.len(), npeers, r.errors);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_output_reports_each_error_where_it_happened() {
        let r = Report {
            cluster: "site-b".into(),
            client: "client.admin".into(),
            fsid: Some("f-b".into()),
            site_name: Some("site-b".into()),
            error: None,
            pools: vec![PoolReport {
                pool: "mirror".into(),
                mode: Some("image".into()),
                mirror_uuid: Some("u-b".into()),
                error: None,
                peers: vec![PeerReport {
                    uuid: "p1".into(),
                    site_name: "site-a".into(),
                    direction: "rx-tx".into(),
                    client_name: "client.rbd-mirror-peer".into(),
                    mirror_uuid: "u-a".into(),
                    mon_host: Some("[v2:127.0.0.1:16300]".into()),
                    fsid: None,
                    remote_mode: None,
                    remote_mirror_uuid: None,
                    error: Some("peer site-a: connect failed".into()),
                }],
            }],
            errors: 1,
        };
        let out = render_plain(&r);
        assert!(out.starts_with("cluster site-b (client.admin): fsid f-b, site name site-b\n"), "{out}");
        assert!(out.contains("pool mirror: mode image, mirror uuid u-b\n"), "{out}");
        assert!(out.contains("    ERROR: peer site-a: connect failed\n"), "{out}");
        assert!(out.ends_with("check: 1 pool(s), 1 peer(s), 1 error(s)\n"), "{out}");
    }
}
