//! The Prometheus endpoint: `GET /metrics` on `--metrics-addr`, in the text exposition
//! format, with the series the mgr's `prometheus` module exports for the stock daemon
//! (`ceph_rbd_mirror_*`, labelled `ceph_daemon="rbd-mirror.<instance id>"`). The stock
//! daemon reports perf counters to the mgr over a protocol librados does not offer, so we
//! serve them ourselves; the names are kept so dashboards and alerts carry over.

use std::net::SocketAddr;
use std::time::Duration;

use image_replayer::registry::Snapshot;
use image_replayer::Registry;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Longest request head we read, and the time allowed to send it.
const MAX_REQUEST: usize = 8192;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Installs the process-wide metrics recorder, labelling every series with our daemon name
/// as the mgr labels the stock daemon's, and records the `ceph_rbd_mirror_metadata` series.
pub fn install(instance_id: &str, client_id: &str) -> Result<Exporter, String> {
    let daemon = format!("rbd-mirror.{instance_id}");
    let handle = PrometheusBuilder::new()
        .add_global_label("ceph_daemon", daemon.clone())
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    image_replayer::metrics::describe();
    metrics::describe_gauge!("ceph_rbd_mirror_metadata", "RBD Mirror Metadata");
    let short_id = client_id.strip_prefix("rbd-mirror.").unwrap_or(client_id).to_owned();
    let version = format!("rbd-mirror-rs {}", env!("CARGO_PKG_VERSION"));
    metrics::gauge!("ceph_rbd_mirror_metadata", "id" => short_id, "instance_id" => instance_id.to_owned(), "ceph_version" => version)
        .set(1.0);
    Ok(Exporter { handle, daemon })
}

/// What `/metrics` renders: the recorder's counters and histograms, then the gauges of the
/// state registry computed at scrape time.
#[derive(Clone)]
pub struct Exporter {
    handle: PrometheusHandle,
    /// `rbd-mirror.<instance id>`, the `ceph_daemon` label.
    daemon: String,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").field("daemon", &self.daemon).finish_non_exhaustive()
    }
}

impl Exporter {
    fn render(&self, registry: &Registry) -> String {
        let mut out = self.handle.render();
        registry_gauges(&mut out, &registry.snapshot(), &self.daemon);
        out
    }
}

/// A label value as the text exposition format escapes it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Appends the registry's gauges: per image its entries behind, lag and state (one series
/// per image, labelled with its state), per pool its image count. Computed from the
/// registry at each scrape, so an image whose replayer stopped has no series left.
fn registry_gauges(out: &mut String, snapshot: &Snapshot, daemon: &str) {
    use image_replayer::metrics::{
        IMAGE_ENTRIES_BEHIND_PRIMARY, IMAGE_LAG_SECONDS, IMAGE_LAST_SYNC_BYTES, IMAGE_LAST_SYNC_TIMESTAMP,
        IMAGE_STATE, PEER_BANDWIDTH_LIMIT, PEER_BANDWIDTH_THROTTLED_BYTES, PEER_BANDWIDTH_WAIT, POOL_IMAGES,
    };
    let epoch_secs =
        |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    use std::fmt::Write;
    let daemon = escape(daemon);
    let image_labels = |k: &image_replayer::ImageKey, name: &str| {
        format!(
            "ceph_daemon=\"{daemon}\",pool=\"{}\",namespace=\"{}\",image=\"{}\"",
            escape(&k.pool),
            escape(&k.namespace),
            escape(name)
        )
    };
    let _ = writeln!(
        out,
        "# HELP {IMAGE_ENTRIES_BEHIND_PRIMARY} Journal entries of the primary not yet replayed"
    );
    let _ = writeln!(out, "# TYPE {IMAGE_ENTRIES_BEHIND_PRIMARY} gauge");
    for (k, s) in &snapshot.images {
        let _ = writeln!(
            out,
            "{IMAGE_ENTRIES_BEHIND_PRIMARY}{{{}}} {}",
            image_labels(k, &s.name),
            s.entries_behind_primary
        );
    }
    let _ = writeln!(out, "# HELP {IMAGE_LAG_SECONDS} Seconds the secondary image is behind the primary");
    let _ = writeln!(out, "# TYPE {IMAGE_LAG_SECONDS} gauge");
    for (k, s) in &snapshot.images {
        // Computed now (the registry keeps since when the copy is behind), to the millisecond.
        if let Some(lag) = s.lag_seconds() {
            let lag = (lag * 1000.0).round() / 1000.0;
            let _ = writeln!(out, "{IMAGE_LAG_SECONDS}{{{}}} {lag}", image_labels(k, &s.name));
        }
    }
    let _ = writeln!(out, "# HELP {IMAGE_STATE} The image's mirror state (1 for the state it is in)");
    let _ = writeln!(out, "# TYPE {IMAGE_STATE} gauge");
    for (k, s) in &snapshot.images {
        let _ =
            writeln!(out, "{IMAGE_STATE}{{{},state=\"{}\"}} 1", image_labels(k, &s.name), s.state.as_str());
    }
    let _ = writeln!(
        out,
        "# HELP {IMAGE_LAST_SYNC_TIMESTAMP} When the image last caught up with a point of the primary (journal: commit position written; snapshot: mirror snapshot synced)"
    );
    let _ = writeln!(out, "# TYPE {IMAGE_LAST_SYNC_TIMESTAMP} gauge");
    for (k, s) in &snapshot.images {
        let last = s.last_snapshot_sync.map(|(t, _)| t).into_iter().chain(s.last_commit).max();
        if let Some(t) = last {
            let _ = writeln!(
                out,
                "{IMAGE_LAST_SYNC_TIMESTAMP}{{{}}} {}",
                image_labels(k, &s.name),
                epoch_secs(t)
            );
        }
    }
    let _ =
        writeln!(out, "# HELP {IMAGE_LAST_SYNC_BYTES} Bytes copied by the image's last mirror snapshot sync");
    let _ = writeln!(out, "# TYPE {IMAGE_LAST_SYNC_BYTES} gauge");
    for (k, s) in &snapshot.images {
        if let Some((_, bytes)) = s.last_snapshot_sync {
            let _ = writeln!(out, "{IMAGE_LAST_SYNC_BYTES}{{{}}} {bytes}", image_labels(k, &s.name));
        }
    }
    // Stock's `replay_latency` time average, as the mgr exports it: a sum and a count.
    let totals = snapshot.totals();
    for (suffix, help, value) in [
        ("sum", "Total", totals.replay_latency.1.as_secs_f64()),
        ("count", "Count", totals.replay_latency.0 as f64),
    ] {
        let _ = writeln!(out, "# HELP ceph_rbd_mirror_replay_latency_{suffix} Replay latency {help}");
        let _ = writeln!(out, "# TYPE ceph_rbd_mirror_replay_latency_{suffix} counter");
        let _ = writeln!(out, "ceph_rbd_mirror_replay_latency_{suffix}{{ceph_daemon=\"{daemon}\"}} {value}");
    }
    for (suffix, help) in [("sum", "Total"), ("count", "Count")] {
        let _ = writeln!(out, "# HELP ceph_rbd_mirror_image_replay_latency_{suffix} Replay latency {help}");
        let _ = writeln!(out, "# TYPE ceph_rbd_mirror_image_replay_latency_{suffix} counter");
        for (k, s) in
            snapshot.images.iter().filter(|(_, s)| s.mode != Some(rbd_types::MirrorImageMode::Snapshot))
        {
            let (count, sum) = s.replay_latency;
            let value = if suffix == "sum" { sum.as_secs_f64() } else { count as f64 };
            let _ = writeln!(
                out,
                "ceph_rbd_mirror_image_replay_latency_{suffix}{{{}}} {value}",
                image_labels(k, &s.name)
            );
        }
    }
    let _ = writeln!(out, "# HELP {POOL_IMAGES} Images this daemon replays");
    let _ = writeln!(out, "# TYPE {POOL_IMAGES} gauge");
    for ((pool, _), _) in &snapshot.pools {
        let n = snapshot.images_of(pool).count();
        let _ = writeln!(out, "{POOL_IMAGES}{{ceph_daemon=\"{daemon}\",pool=\"{}\"}} {n}", escape(pool));
    }
    // The bandwidth caps, one per pool replayer (pool and peer).
    let caps: Vec<_> = snapshot
        .pools
        .iter()
        .filter_map(|((pool, peer), p)| {
            let labels =
                format!("ceph_daemon=\"{daemon}\",pool=\"{}\",peer=\"{}\"", escape(pool), escape(peer));
            Some((labels, p.bandwidth.as_ref()?))
        })
        .collect();
    for (name, kind, help, value) in [
        (
            PEER_BANDWIDTH_LIMIT,
            "gauge",
            "Bandwidth cap of the peer connection, bytes/s read from the primary (0: none)",
            (|b| b.limit() as f64) as fn(&image_replayer::Bandwidth) -> f64,
        ),
        (PEER_BANDWIDTH_WAIT, "counter", "Seconds image replayers waited on a bandwidth cap", |b| {
            b.waited().as_secs_f64()
        }),
        (PEER_BANDWIDTH_THROTTLED_BYTES, "counter", "Bytes whose reader waited on a bandwidth cap", |b| {
            b.throttled_bytes() as f64
        }),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, b) in &caps {
            let _ = writeln!(out, "{name}{{{labels}}} {}", value(b));
        }
    }
}

/// Binds `addr`; an address in use is a clear startup error rather than a silent gap.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))
}

/// Serves `/metrics` until `cancel` fires; one short task per connection.
pub async fn serve(listener: TcpListener, exporter: Exporter, registry: Registry, cancel: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let (exporter, registry) = (exporter.clone(), registry.clone());
                tokio::spawn(async move {
                    if let Err(e) = respond(stream, &exporter, &registry).await {
                        tracing::debug!(%peer, error = %e, "metrics request failed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn respond(mut stream: TcpStream, exporter: &Exporter, registry: &Registry) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(buf.get(..n).unwrap_or_default());
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    if read.is_err() {
        return Ok(());
    }
    read.unwrap_or(Ok(()))?;
    let (status, content_type, body) = match request_target(&head) {
        Some("/metrics") => ("200 OK", "text/plain; version=0.0.4", exporter.render(registry)),
        Some(_) => ("404 Not Found", "text/plain", "try /metrics\n".to_owned()),
        None => ("400 Bad Request", "text/plain", "bad request\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// The path of a `GET` request line, without its query.
fn request_target(head: &[u8]) -> Option<&str> {
    let line = head.split(|&b| b == b'\r' || b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let (method, target) = (parts.next()?, parts.next()?);
    if method != "GET" || !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    Some(target.split('?').next().unwrap_or(target))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image_replayer::ImageKey;
    use rbd_types::MirrorImageStatusState;

    #[test]
    fn registry_gauges_follow_the_registry() {
        let registry = Registry::new();
        registry.add_pool(
            "mirror",
            image_replayer::PoolState {
                pool_id: 2,
                peer_site: "site-a".into(),
                bandwidth: Some(std::sync::Arc::new(image_replayer::Bandwidth::new(4 << 20))),
                ..Default::default()
            },
        );
        let image = registry.image(ImageKey::new("mirror", "", "g1"));
        image.update(|s| {
            s.name = "a\"b".into();
            s.state = MirrorImageStatusState::Replaying;
            s.entries_behind_primary = 7;
            // Behind since 90 s ago: 90 s when scraped (the lag grows until updated).
            s.lag =
                image_replayer::registry::Lag::Since(std::time::SystemTime::now() - Duration::from_secs(90));
            s.last_snapshot_sync = Some((std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000), 4096));
            s.replay_latency = (4, Duration::from_millis(1500));
        });
        let mut out = String::new();
        registry_gauges(&mut out, &registry.snapshot(), "rbd-mirror.42");
        let labels = r#"ceph_daemon="rbd-mirror.42",pool="mirror",namespace="",image="a\"b""#;
        assert!(
            out.contains(&format!("rbd_mirror_rs_image_entries_behind_primary{{{labels}}} 7\n")),
            "{out}"
        );
        let lag = format!("rbd_mirror_rs_image_lag_seconds{{{labels}}} ");
        let lag: f64 = out
            .lines()
            .find_map(|l| l.strip_prefix(&lag))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no lag in {out}"));
        assert!((90.0..91.0).contains(&lag), "{out}");
        assert!(
            out.contains(&format!("rbd_mirror_rs_image_state{{{labels},state=\"replaying\"}} 1\n")),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "rbd_mirror_rs_image_last_sync_timestamp_seconds{{{labels}}} 1700000000\n"
            )),
            "{out}"
        );
        assert!(out.contains(&format!("rbd_mirror_rs_image_last_sync_bytes{{{labels}}} 4096\n")), "{out}");
        assert!(
            out.contains(&format!("ceph_rbd_mirror_image_replay_latency_count{{{labels}}} 4\n")),
            "{out}"
        );
        assert!(
            out.contains(&format!("ceph_rbd_mirror_image_replay_latency_sum{{{labels}}} 1.5\n")),
            "{out}"
        );
        assert!(
            out.contains("ceph_rbd_mirror_replay_latency_count{ceph_daemon=\"rbd-mirror.42\"} 4\n"),
            "{out}"
        );
        assert!(
            out.contains("rbd_mirror_rs_pool_images{ceph_daemon=\"rbd-mirror.42\",pool=\"mirror\"} 1\n"),
            "{out}"
        );
        let peer = r#"ceph_daemon="rbd-mirror.42",pool="mirror",peer="site-a""#;
        assert!(
            out.contains(&format!("rbd_mirror_rs_peer_bandwidth_limit_bytes{{{peer}}} 4194304\n")),
            "{out}"
        );
        assert!(out.contains(&format!("rbd_mirror_rs_peer_bandwidth_wait_seconds{{{peer}}} 0\n")), "{out}");
        assert!(out.contains("# TYPE rbd_mirror_rs_peer_bandwidth_throttled_bytes counter\n"), "{out}");
        // A stopped image leaves no series.
        registry.remove_image(image.key());
        let mut out = String::new();
        registry_gauges(&mut out, &registry.snapshot(), "rbd-mirror.42");
        assert!(!out.contains("image=\""), "{out}");
        assert!(out.contains("pool=\"mirror\"} 0\n"), "{out}");
    }

    #[test]
    fn request_lines() {
        assert_eq!(request_target(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), Some("/metrics"));
        assert_eq!(request_target(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Some("/metrics"));
        assert_eq!(request_target(b"POST /metrics HTTP/1.1\r\n\r\n"), None);
        assert_eq!(request_target(b"GET /metrics\r\n\r\n"), None);
        assert_eq!(request_target(b"\xff\xfe"), None);
        assert_eq!(request_target(b""), None);
    }
}
