//! The Prometheus endpoint: `GET /metrics` on `--metrics-addr`, in the text exposition
//! format, with the series the mgr's `prometheus` module exports for the stock daemon
//! (`ceph_rbd_mirror_*`, labelled `ceph_daemon="rbd-mirror.<instance id>"`). The stock
//! daemon reports perf counters to the mgr over a protocol librados does not offer, so we
//! serve them ourselves; the names are kept so dashboards and alerts carry over.

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Longest request head we read, and the time allowed to send it.
const MAX_REQUEST: usize = 8192;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Installs the process-wide metrics recorder, labelling every series with our daemon name
/// as the mgr labels the stock daemon's, and records the `ceph_rbd_mirror_metadata` series.
pub fn install(instance_id: &str, client_id: &str) -> Result<PrometheusHandle, String> {
    let daemon = format!("rbd-mirror.{instance_id}");
    let handle = PrometheusBuilder::new()
        .add_global_label("ceph_daemon", daemon)
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    image_replayer::metrics::describe();
    metrics::describe_gauge!("ceph_rbd_mirror_metadata", "RBD Mirror Metadata");
    let short_id = client_id.strip_prefix("rbd-mirror.").unwrap_or(client_id).to_owned();
    let version = format!("rbd-mirror-rs {}", env!("CARGO_PKG_VERSION"));
    metrics::gauge!("ceph_rbd_mirror_metadata", "id" => short_id, "instance_id" => instance_id.to_owned(), "ceph_version" => version)
        .set(1.0);
    Ok(handle)
}

/// Binds `addr`; an address in use is a clear startup error rather than a silent gap.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))
}

/// Serves `/metrics` until `cancel` fires; one short task per connection.
pub async fn serve(listener: TcpListener, handle: PrometheusHandle, cancel: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let handle = handle.clone();
                tokio::spawn(async move {
                    if let Err(e) = respond(stream, &handle).await {
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

async fn respond(mut stream: TcpStream, handle: &PrometheusHandle) -> std::io::Result<()> {
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
        Some("/metrics") => ("200 OK", "text/plain; version=0.0.4", handle.render()),
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
    use super::request_target;

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
