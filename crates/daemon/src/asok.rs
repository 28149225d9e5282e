//! The admin socket, as Ceph's `AdminSocket` serves it, so that `ceph --admin-daemon <path>
//! <command>` and `ceph daemon` work unchanged (../shared/docs/admin-socket.md §1): a UNIX
//! stream socket; one request per connection, a JSON object ended by NUL or newline (or the
//! old protocol's 4-byte code); the reply a 4-byte big-endian length and the payload,
//! json-pretty as Ceph's formatter prints it; errors in band (`ERROR: (22) ...`).
//!
//! The `ceph` CLI first asks `get_command_descriptions` and sends only commands listed
//! there, so per-pool and per-image commands are listed only while this daemon runs that
//! pool or image. Served: `help`, `get_command_descriptions`, `version`, `git_version`,
//! `config get|set|show|diff`, `log reopen`, `perf dump|schema` (the stock loggers, from the
//! registry), and `rbd mirror status|start|stop|restart|flush` for the daemon, a pool
//! replayer (`<pool> <peer site>`) or an image (`<pool>/[<namespace>/]<image>`), through
//! the state registry (whose per-image control the image replayer follows) and the
//! configuration. Each request runs in a task of its own: `flush` replies only once journal
//! replay has applied and committed what the primary had written.
//! `rbd mirror deletion status <pool>` prints the pool's image deleter queues;
//! `rbd mirror leader release` (daemon or pool) makes the leader watchers of the pools this
//! instance leads release the lock (another instance takes over; with none, this one takes
//! it back after `rbd_mirror_leader_heartbeat_interval * max_missed_heartbeats`, as stock).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use image_replayer::{ConfigHandle, ImageKey, ImageState, Registry};
use rados_ffi::Rados;
use rbd_types::MirrorImageStatusState;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

/// Longest request (Ceph's `char cmd[1024]`).
const MAX_REQUEST: usize = 1024;
/// Time allowed for a client to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the commands read and change.
#[derive(Debug)]
pub struct Context {
    /// The state registry.
    pub registry: Registry,
    /// The configuration (`config get|set`).
    pub config: Arc<ConfigHandle>,
    /// The local cluster (Ceph's own options for `config get`).
    pub local: Rados,
    /// `client.<id>`.
    pub name: String,
    /// Local cluster name.
    pub cluster: String,
    /// Our instance id (the local client's global id).
    pub instance_id: String,
    /// The log file `log reopen` reopens, when output goes to one.
    pub log_file: Option<PathBuf>,
}

/// The socket path: the configured `admin_socket` with Ceph's metavariables expanded, or the
/// stock rbd-mirror default `$run_dir/$cluster-$name.$pid.$cctid.asok`.
pub fn path(configured: Option<&str>, run_dir: &str, cluster: &str, name: &str) -> PathBuf {
    let template = configured.unwrap_or("$run_dir/$cluster-$name.$pid.$cctid.asok");
    let pid = std::process::id().to_string();
    let id = name.split_once('.').map_or(name, |(_, id)| id);
    let path = template
        .replace("$run_dir", run_dir)
        .replace("$cluster", cluster)
        .replace("$name", name)
        .replace("$id", id)
        .replace("$type", "client")
        .replace("$pid", &pid)
        // Ceph uses the address of its config object: any number unique in the process.
        .replace("$cctid", &pid);
    PathBuf::from(path)
}

/// Binds `path` as Ceph does: a socket left by a dead process is replaced; one that answers
/// is an error (another daemon serves it).
pub async fn bind(path: &Path) -> Result<UnixListener, String> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(format!(
                "failed to bind the UNIX domain socket to '{}': (17) File exists (another process serves it)",
                path.display()
            ));
        }
        let _ = std::fs::remove_file(path);
    }
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    UnixListener::bind(path)
        .map_err(|e| format!("failed to bind the UNIX domain socket to '{}': {e}", path.display()))
}

/// Serves requests one connection at a time, as Ceph's admin socket, until `cancel`; the
/// socket file is removed at the end.
pub async fn serve(listener: UnixListener, path: PathBuf, ctx: Arc<Context>, cancel: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            // One task a request: `rbd mirror flush` waits for replay, the others need not.
            Ok((stream, _)) => {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    if let Err(e) = respond(stream, &ctx).await {
                        tracing::debug!(error = %e, "admin socket request failed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let _ = std::fs::remove_file(&path);
}

async fn respond(mut stream: UnixStream, ctx: &Context) -> std::io::Result<()> {
    let request = match tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut stream)).await {
        Ok(Ok(Some(request))) => request,
        Ok(Ok(None)) | Err(_) => return Ok(()),
        Ok(Err(e)) => return Err(e),
    };
    let reply = match execute(ctx, &request) {
        Reply::Now(reply) => reply,
        Reply::Flush(target) => flush(ctx, target.as_deref()).await,
    };
    stream.write_all(&u32::try_from(reply.len()).unwrap_or(u32::MAX).to_be_bytes()).await?;
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await
}

/// Reads one request: a JSON object ended by NUL or newline, or the old protocol's code.
/// None when the client went away or sent too much.
async fn read_request(stream: &mut UnixStream) -> std::io::Result<Option<String>> {
    let mut request = Vec::with_capacity(64);
    let mut byte = [0u8; 1];
    loop {
        if stream.read(&mut byte).await? == 0 {
            return Ok(None);
        }
        if request.is_empty() && byte[0] == 0 {
            // Old protocol: a 4-byte big-endian code, its first byte read.
            let mut rest = [0u8; 3];
            stream.read_exact(&mut rest).await?;
            let code = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]);
            let prefix = match code {
                0 => "0",
                1 => "perfcounters_dump",
                2 => "perfcounters_schema",
                _ => "foo",
            };
            request = format!("{{\"prefix\": \"{prefix}\"}}").into_bytes();
            break;
        }
        if byte[0] == 0 || byte[0] == b'\n' {
            break;
        }
        request.push(byte[0]);
        if request.len() >= MAX_REQUEST {
            tracing::warn!("admin socket: error reading request too long");
            return Ok(None);
        }
    }
    Ok(Some(String::from_utf8_lossy(&request).into_owned()))
}

/// A command as `get_command_descriptions` lists it: its desc and help.
struct Desc {
    desc: String,
    help: String,
}

/// Every command served now (per-pool and per-image ones only for what runs).
fn descriptions(ctx: &Context) -> Vec<Desc> {
    let d = |desc: &str, help: &str| Desc { desc: desc.to_owned(), help: help.to_owned() };
    let mut out = vec![
        d("0", ""),
        d("config get name=var,type=CephString", "config get <field>: get the config value"),
        d(
            "config set name=var,type=CephString name=val,type=CephString,n=N",
            "config set <field> <val> [<val> ...]: set a config variable",
        ),
        d("config diff", "dump diff of current config and default config"),
        d("config show", "dump current config settings"),
        d("log reopen", "reopen log file"),
        d(
            "perf dump name=logger,type=CephString,req=false name=counter,type=CephString,req=false",
            "dump perfcounters value",
        ),
        d("perf schema", "dump perfcounters schema"),
        d("get_command_descriptions", "list available commands"),
        d("git_version", "get git sha1"),
        d("help", "list available commands"),
        d("rbd mirror flush", "flush rbd mirror"),
        d("rbd mirror leader release", "release rbd mirror leader"),
        d("rbd mirror restart", "restart rbd mirror"),
        d("rbd mirror start", "start rbd mirror"),
        d("rbd mirror status", "get status for rbd mirror"),
        d("rbd mirror stop", "stop rbd mirror"),
        d("version", "get ceph version"),
    ];
    let snapshot = ctx.registry.snapshot();
    let verbs = [
        ("status", "get status for"),
        ("start", "start"),
        ("stop", "stop"),
        ("restart", "restart"),
        ("flush", "flush"),
    ];
    for ((pool, peer), _) in &snapshot.pools {
        for (verb, help) in verbs {
            out.push(Desc {
                desc: format!("rbd mirror {verb} {pool} {peer}"),
                help: format!("{help} rbd mirror {pool} {peer}"),
            });
        }
        out.push(Desc {
            desc: format!("rbd mirror leader release {pool} {peer}"),
            help: format!("release rbd mirror leader {pool} {peer}"),
        });
        let deletion = format!("rbd mirror deletion status {pool}");
        if !out.iter().any(|d| d.desc == deletion) {
            out.push(Desc { desc: deletion, help: "get status for image deleter".to_owned() });
        }
    }
    for (key, state) in &snapshot.images {
        let spec = image_spec(key, state);
        for (verb, help) in verbs {
            out.push(Desc {
                desc: format!("rbd mirror {verb} {spec}"),
                help: format!("{help} rbd mirror {spec}"),
            });
        }
    }
    out.sort_by(|a, b| a.desc.cmp(&b.desc));
    out
}

/// `<pool>/[<namespace>/]<image>`: the image's name once known, its global id before.
fn image_spec(key: &ImageKey, state: &ImageState) -> String {
    let name = if state.name.is_empty() { &key.global_id } else { &state.name };
    if key.namespace.is_empty() {
        format!("{}/{name}", key.pool)
    } else {
        format!("{}/{}/{name}", key.pool, key.namespace)
    }
}

/// A desc's signature as `get_command_descriptions` prints it: words, and `key=val,...`
/// words as objects of string values.
fn signature(desc: &str) -> Vec<Value> {
    desc.split(' ')
        .filter(|w| !w.is_empty())
        .map(|w| {
            if w.contains('=') {
                let map: BTreeMap<&str, &str> = w.split(',').filter_map(|kv| kv.split_once('=')).collect();
                json!(map)
            } else {
                json!(w)
            }
        })
        .collect()
}

/// The prefix of a desc: its leading words without `=` or `,`.
fn prefix_of(desc: &str) -> String {
    desc.split(' ').take_while(|w| !w.contains('=') && !w.contains(',')).collect::<Vec<_>>().join(" ")
}

/// `v` as the request's format asks: json, or json-pretty.
fn render(v: &impl Serialize, compact: bool) -> String {
    if compact {
        serde_json::to_string(v).unwrap_or_default()
    } else {
        pretty(v)
    }
}

/// json-pretty as Ceph's formatter prints it: 4-space indent, `"key": value`, a final newline.
fn pretty(v: &impl Serialize) -> String {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    if v.serialize(&mut ser).is_err() {
        return String::new();
    }
    let mut s = String::from_utf8_lossy(&out).into_owned();
    s.push('\n');
    s
}

fn error(code: i32, what: &str, detail: &str) -> String {
    format!("ERROR: ({code}) {what}\n{detail}\n")
}

const EINVAL: (i32, &str) = (22, "Invalid argument");
const ENOENT: (i32, &str) = (2, "No such file or directory");

/// What a request gets: its payload now, or after a flush of the daemon (target none), a
/// pool replayer's images (`<pool> <peer site>`) or an image (`<pool>/[<ns>/]<image>`).
enum Reply {
    Now(String),
    Flush(Option<String>),
}

/// Runs one request (JSON).
fn execute(ctx: &Context, request: &str) -> Reply {
    let Ok(Value::Object(cmd)) = serde_json::from_str::<Value>(request) else {
        return Reply::Now(error(EINVAL.0, EINVAL.1, "invalid json"));
    };
    let Some(prefix) = cmd.get("prefix").and_then(Value::as_str) else {
        return Reply::Now(error(EINVAL.0, EINVAL.1, "invalid json, missing format and/or prefix"));
    };
    let descs = descriptions(ctx);
    if !descs.iter().any(|d| prefix_of(&d.desc) == prefix) {
        return Reply::Now(error(EINVAL.0, EINVAL.1, &format!("unknown command prefix {prefix}")));
    }
    match prefix.strip_prefix("rbd mirror flush") {
        Some(target) => Reply::Flush(target.strip_prefix(' ').map(str::to_owned)),
        None => Reply::Now(run(ctx, prefix, &cmd, &descs)),
    }
}

/// Runs one listed command other than `rbd mirror flush` and returns its payload.
fn run(ctx: &Context, prefix: &str, cmd: &serde_json::Map<String, Value>, descs: &[Desc]) -> String {
    let compact = cmd.get("format").and_then(Value::as_str) == Some("json");
    match prefix {
        "0" => "2".to_owned(),
        "version" => render(
            &Version { version: env!("CARGO_PKG_VERSION"), release: "rbd-mirror-rs", release_type: "stable" },
            compact,
        ),
        "git_version" => {
            render(&json!({"git_version": option_env!("RBD_MIRROR_RS_GIT").unwrap_or("")}), compact)
        }
        "help" => {
            let map: BTreeMap<String, String> = descs
                .iter()
                .filter(|d| !d.help.is_empty())
                .map(|d| (d.desc.clone(), d.help.clone()))
                .collect();
            render(&map, compact)
        }
        "get_command_descriptions" => {
            let map: BTreeMap<String, Value> = descs
                .iter()
                .enumerate()
                .map(|(i, d)| (format!("cmd{i:03}"), json!({"sig": signature(&d.desc), "help": d.help})))
                .collect();
            render(&map, compact)
        }
        "config get" => {
            let var = cmd.get("var").and_then(Value::as_str).unwrap_or_default();
            let value = ctx.config.current().get(var).or_else(|| ctx.local.conf_get(&var.replace('-', "_")));
            match value {
                Some(v) => {
                    let mut map = serde_json::Map::new();
                    map.insert(var.to_owned(), json!(v));
                    render(&map, compact)
                }
                None => {
                    let e = format!("error getting '{var}': ({}) {}", ENOENT.0, ENOENT.1);
                    error(ENOENT.0, ENOENT.1, &e)
                }
            }
        }
        "config set" => {
            let var = cmd.get("var").and_then(Value::as_str).unwrap_or_default();
            let val = match cmd.get("val") {
                Some(Value::Array(parts)) => {
                    parts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" ")
                }
                Some(Value::String(s)) => s.clone(),
                _ => String::new(),
            };
            let known = image_replayer::MirrorConfig::default().get(&var.replace('-', "_")).is_some();
            let applied = if known {
                ctx.config.update(|c| c.set(var, &val)).map_err(|e| e.to_string()).and_then(|_| {
                    // Ceph's options are set in librados too, which the runtime refresh reads.
                    if image_replayer::MirrorConfig::is_ceph_option(var) {
                        ctx.local.conf_set(&var.replace('-', "_"), &val).map_err(|e| e.to_string())?;
                    }
                    Ok(())
                })
            } else {
                // Any other Ceph option (`debug_rbd_mirror`...) is librados': it checks it.
                ctx.local.conf_set(&var.replace('-', "_"), &val).map_err(|e| e.to_string()).map(|()| {
                    crate::logging::follow_debug_rbd_mirror(ctx.local.conf_get("debug_rbd_mirror"));
                })
            };
            match applied {
                Ok(()) => {
                    tracing::info!(option = var, value = %val, "configuration set through the admin socket");
                    render(&json!({"success": ""}), compact)
                }
                Err(e) => error(EINVAL.0, EINVAL.1, &e),
            }
        }
        "config show" => {
            let config = ctx.config.current();
            let mut map = serde_json::Map::new();
            map.insert("name".into(), json!(ctx.name));
            map.insert("cluster".into(), json!(ctx.cluster));
            for name in image_replayer::MirrorConfig::names() {
                if let Some(v) = config.get(name) {
                    map.insert((*name).to_owned(), json!(v));
                }
            }
            render(&map, compact)
        }
        "config diff" => {
            let (defaults, current) = (image_replayer::MirrorConfig::default(), ctx.config.current());
            let diff: BTreeMap<&str, Value> = defaults
                .diff(&current)
                .into_iter()
                .map(|(name, default, now)| (name, json!({"default": default, "final": now})))
                .collect();
            render(&json!({ "diff": diff }), compact)
        }
        "log reopen" => {
            if let Some(path) = &ctx.log_file {
                if let Err(e) = rados_ffi::process::redirect_output(path) {
                    return error(5, "Input/output error", &format!("reopening {}: {e}", path.display()));
                }
            }
            render(&json!({}), compact)
        }
        "perf dump" => {
            let mut dump = perf_dump(ctx);
            if let Some(logger) = cmd.get("logger").and_then(Value::as_str) {
                dump.retain(|name, _| name == logger);
                if let Some(counter) = cmd.get("counter").and_then(Value::as_str) {
                    for counters in dump.values_mut() {
                        if let Value::Object(c) = counters {
                            c.retain(|name, _| name == counter);
                        }
                    }
                }
            }
            render(&dump, compact)
        }
        "perf schema" => render(&perf_schema(ctx), compact),
        "rbd mirror status" => render(&Mirror { pool_replayers: pool_replayers(ctx, None) }, compact),
        other if other.starts_with("rbd mirror leader release") => {
            let which = other["rbd mirror leader release".len()..].trim().to_owned();
            let released = ctx
                .registry
                .release_leader(|pool, peer| which.is_empty() || which == format!("{pool} {peer}"));
            tracing::info!(command = other, pools = released, "leader release asked");
            String::new()
        }
        other if other.starts_with("rbd mirror deletion status ") => {
            let pool = &other["rbd mirror deletion status ".len()..];
            render(&deletion_status(ctx, pool), compact)
        }
        other
            if ["start", "stop", "restart"].iter().any(|v| other.starts_with(&format!("rbd mirror {v}"))) =>
        {
            let mut words = other.splitn(4, ' ').skip(2);
            let verb = words.next().unwrap_or_default();
            let target = words.next();
            operate(ctx, verb, target);
            // As stock: these commands print nothing.
            String::new()
        }
        other => {
            let snapshot = ctx.registry.snapshot();
            let arg = other.strip_prefix("rbd mirror status ").unwrap_or_default();
            if let Some((key, state)) = snapshot.images.iter().find(|(k, s)| image_spec(k, s) == arg) {
                let status =
                    ImageReplayerStatus { name: image_spec(key, state), state: replayer_state(state) };
                return render(&status, compact);
            }
            let mut pools = pool_replayers(ctx, Some(arg));
            match pools.pop() {
                Some(p) => render(&p, compact),
                None => error(EINVAL.0, EINVAL.1, &format!("unknown command prefix {other}")),
            }
        }
    }
}

/// `rbd mirror status`'s reply (the `mirror_status` section, whose name JSON drops).
#[derive(Serialize)]
struct Mirror {
    pool_replayers: Vec<PoolReplayerStatus>,
}

/// `version`'s reply, in Ceph's key order.
#[derive(Serialize)]
struct Version {
    version: &'static str,
    release: &'static str,
    release_type: &'static str,
}

/// One image replayer, as `ImageReplayer::print_status` prints it.
#[derive(Serialize)]
struct ImageReplayerStatus {
    name: String,
    state: &'static str,
}

/// One pool replayer, in `PoolReplayer::print_status`'s key order.
#[derive(Serialize)]
struct PoolReplayerStatus {
    peer: String,
    pool: String,
    instance_id: String,
    state: &'static str,
    leader_instance_id: String,
    leader: bool,
    instances: Vec<String>,
    image_replayers: Vec<ImageReplayerStatus>,
    namespaces: Vec<NamespaceStatus>,
}

/// One namespace of a pool replayer: its name, then what `NamespaceReplayer::print_status`
/// prints.
#[derive(Serialize)]
struct NamespaceStatus {
    name: String,
    image_replayers: Vec<ImageReplayerStatus>,
}

/// The pool replayers' status as `Mirror::print_status` prints it (only the one named
/// `<pool> <peer site>` when `only` is given).
fn pool_replayers(ctx: &Context, only: Option<&str>) -> Vec<PoolReplayerStatus> {
    let snapshot = ctx.registry.snapshot();
    let mut out = Vec::new();
    for ((pool, peer), p) in &snapshot.pools {
        if only.is_some_and(|o| o != format!("{pool} {peer}")) {
            continue;
        }
        let image_replayers = snapshot
            .images_of(pool)
            .filter(|(k, _)| k.namespace.is_empty())
            .map(|(k, s)| ImageReplayerStatus { name: image_spec(k, s), state: replayer_state(s) })
            .collect();
        // As stock: the default namespace's image replayers at the top, each other
        // namespace served as `{"name": <ns>, "image_replayers": [...]}`.
        let mut namespaces: BTreeMap<&str, Vec<ImageReplayerStatus>> =
            p.deletions.keys().filter(|ns| !ns.is_empty()).map(|ns| (ns.as_str(), Vec::new())).collect();
        for (k, s) in snapshot.images_of(pool).filter(|(k, _)| !k.namespace.is_empty()) {
            namespaces
                .entry(k.namespace.as_str())
                .or_default()
                .push(ImageReplayerStatus { name: image_spec(k, s), state: replayer_state(s) });
        }
        let namespaces = namespaces
            .into_iter()
            .map(|(name, image_replayers)| NamespaceStatus { name: name.to_owned(), image_replayers })
            .collect();
        out.push(PoolReplayerStatus {
            peer: format!("uuid: {} cluster: {} client: {}", p.peer_uuid, peer, p.peer_client),
            pool: pool.clone(),
            instance_id: ctx.instance_id.clone(),
            state: if p.error.is_some() { "error" } else { "running" },
            leader_instance_id: p.leader.leader_instance_id.clone().unwrap_or_default(),
            leader: p.leader.leader,
            instances: p.leader.instances.clone(),
            image_replayers,
            namespaces,
        });
    }
    out
}

/// `rbd mirror deletion status <pool>` as `ImageDeleter::print_status` prints it (its
/// `image_deleter_status` section, whose name JSON drops): the local images queued for
/// deletion, and those whose deletion failed with the error and the attempts so far. Ours
/// also name the global image id (the local id may not be known yet) and, for an image in
/// the RBD trash waiting for `rbd_mirroring_delete_delay`, when it may go (stock lists those
/// among its failed deletions, with error 0).
fn deletion_status(ctx: &Context, pool: &str) -> DeletionStatus {
    let snapshot = ctx.registry.snapshot();
    let item = |d: &image_replayer::Deletion, failed: bool| DeleteInfo {
        image_id: d.image_id.clone().unwrap_or_default(),
        error_code: failed.then(|| d.error.clone().unwrap_or_default()),
        retries: failed.then_some(d.retries),
        global_image_id: d.global_id.clone(),
        deferment_end_time: d
            .deferment_end_time
            .map(|t| rbd_types::encoding::UTime::from_system_time(t).utc_string()),
    };
    let mut status = DeletionStatus::default();
    for (_, state) in snapshot.pools.iter().filter(|((p, _), _)| p == pool) {
        for deletions in state.deletions.values() {
            status.delete_images_queue.extend(deletions.queued.iter().map(|d| item(d, false)));
            status.failed_deletes_queue.extend(deletions.failed.iter().map(|d| item(d, true)));
        }
    }
    status
}

/// `rbd mirror deletion status <pool>`'s reply, in stock's key order.
#[derive(Serialize, Default)]
struct DeletionStatus {
    delete_images_queue: Vec<DeleteInfo>,
    failed_deletes_queue: Vec<DeleteInfo>,
}

/// One entry of a deletion queue (`DeleteInfo::print_status`, plus the global id).
#[derive(Serialize)]
struct DeleteInfo {
    image_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retries: Option<u32>,
    global_image_id: String,
    /// In the RBD trash: when its deferment ends (UTC), ours.
    #[serde(skip_serializing_if = "Option::is_none")]
    deferment_end_time: Option<String>,
}

/// Longest wait of `rbd mirror flush` for the images' replay.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(120);

/// `rbd mirror flush` for every image (`target` none), a pool replayer's (`<pool> <peer
/// site>`) or one image: each image in journal replay applies every entry already in the
/// primary's journal and commits its position there; the reply (empty, as stock's) comes
/// when all have, or have left replay. Snapshot-mode images have nothing to flush.
async fn flush(ctx: &Context, target: Option<&str>) -> String {
    let asked = ctx.registry.control(|key, state| targets(key, state, target), |c| c.flushes += 1);
    tracing::info!(
        target = target.unwrap_or("all"),
        images = asked.len(),
        "rbd mirror flush through the admin socket"
    );
    let deadline = tokio::time::Instant::now() + FLUSH_TIMEOUT;
    loop {
        let snapshot = ctx.registry.snapshot();
        let waiting = asked
            .iter()
            .filter(|(key, control)| {
                snapshot.images.iter().any(|(k, s)| {
                    k == key
                        && s.flushed < control.flushes
                        && s.state == MirrorImageStatusState::Replaying
                        && s.mode != Some(rbd_types::cls_rbd::MirrorImageMode::Snapshot)
                })
            })
            .count();
        if waiting == 0 {
            return String::new();
        }
        if tokio::time::Instant::now() >= deadline {
            let detail = format!("{waiting} image(s) not flushed within {} s", FLUSH_TIMEOUT.as_secs());
            return error(110, "Connection timed out", &detail);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `target` (none: every image; `<pool> <peer site>`: the pool's;
/// `<pool>/[<ns>/]<image>`: that one) names the image.
fn targets(key: &ImageKey, state: &ImageState, target: Option<&str>) -> bool {
    match target {
        None => true,
        Some(t) => match t.split_once(' ') {
            Some((pool, _)) => key.pool == pool,
            None => image_spec(key, state) == t,
        },
    }
}

/// `rbd mirror start|stop|restart` for every image (`target` none), a pool replayer's
/// (`<pool> <peer site>`) or one image (`<pool>/[<ns>/]<image>`): the image replayers
/// stop (committing their position) and stay stopped, start, or restart.
fn operate(ctx: &Context, verb: &str, target: Option<&str>) {
    let n = ctx.registry.control(
        |key, state| targets(key, state, target),
        |c| match verb {
            "stop" => c.stopped = true,
            "start" => c.stopped = false,
            _ => {
                c.stopped = false;
                c.restarts += 1;
            }
        },
    );
    tracing::info!(
        verb,
        target = target.unwrap_or("all"),
        images = n.len(),
        "rbd mirror {verb} through the admin socket"
    );
}

/// A long-running average as Ceph's `perf dump` prints it.
fn average(count: u64, sum: Duration) -> Value {
    let avg = if count == 0 { 0.0 } else { sum.as_secs_f64() / count as f64 };
    json!({"avgcount": count, "sum": sum.as_secs_f64(), "avgtime": avg})
}

/// `perf dump`: the stock daemon's loggers (`rbd_mirror`, `rbd_mirror_image_<spec>`,
/// `rbd_mirror_snapshot`, `rbd_mirror_snapshot_image_<spec>`) from the registry; the
/// daemon-wide ones keep what stopped images counted. `replay_latency`: from a replay
/// window taking its first entry to its writes durable, per entry.
fn perf_dump(ctx: &Context) -> BTreeMap<String, Value> {
    let snapshot = ctx.registry.snapshot();
    let t = snapshot.totals();
    let mut out = BTreeMap::new();
    out.insert(
        "rbd_mirror".to_owned(),
        json!({
            "replay": t.entries_replayed,
            "replay_bytes": t.journal_bytes,
            "replay_latency": average(t.replay_latency.0, t.replay_latency.1),
        }),
    );
    out.insert(
        "rbd_mirror_snapshot".to_owned(),
        json!({
            "snapshots": t.snapshots_synced,
            "snapshots_time": average(t.snapshots_synced, t.snapshots_time),
            "replay_bytes": t.snapshot_bytes,
        }),
    );
    for (key, s) in &snapshot.images {
        let spec = image_spec(key, s);
        match s.mode {
            Some(rbd_types::MirrorImageMode::Snapshot) => out.insert(
                format!("rbd_mirror_snapshot_image_{spec}"),
                json!({
                    "snapshots": s.snapshots_synced,
                    "snapshots_time": average(s.snapshots_synced, s.snapshots_time),
                    "replay_bytes": s.bytes_replayed,
                }),
            ),
            _ => out.insert(
                format!("rbd_mirror_image_{spec}"),
                json!({
                    "replay": s.entries_replayed,
                    "replay_bytes": s.bytes_replayed,
                    "replay_latency": average(s.replay_latency.0, s.replay_latency.1),
                }),
            ),
        };
    }
    out
}

/// `perf schema` of the loggers `perf dump` prints (types as Ceph's bits: U64|COUNTER = 10,
/// TIME|LONGRUNAVG = 5).
fn perf_schema(ctx: &Context) -> BTreeMap<String, Value> {
    let counter = |description: &str, nick: &str, units: &str| {
        json!({"type": 10, "metric_type": "counter", "value_type": "integer", "description": description,
               "nick": nick, "priority": 5, "units": units})
    };
    let average = |description: &str, nick: &str| {
        json!({"type": 5, "metric_type": "gauge", "value_type": "real-integer-pair",
               "description": description, "nick": nick, "priority": 5, "units": "none"})
    };
    perf_dump(ctx)
        .keys()
        .map(|logger| {
            let schema = if logger.starts_with("rbd_mirror_snapshot") {
                json!({"snapshots": counter("Snapshots", "r", "none"),
                       "snapshots_time": average("Snapshots time", "rl"),
                       "replay_bytes": counter("Replayed data", "rb", "bytes")})
            } else {
                json!({"replay": counter("Replays", "r", "none"),
                       "replay_bytes": counter("Replayed data", "rb", "bytes"),
                       "replay_latency": average("Replay latency", "rl")})
            };
            (logger.clone(), schema)
        })
        .collect()
}

/// The image replayer's state as stock names it (`ImageReplayer::to_string`).
fn replayer_state(s: &ImageState) -> &'static str {
    match s.state {
        MirrorImageStatusState::Replaying => "Replaying",
        MirrorImageStatusState::Syncing | MirrorImageStatusState::StartingReplay => "Starting",
        MirrorImageStatusState::StoppingReplay => "Stopping",
        MirrorImageStatusState::Unknown if s.name.is_empty() => "Starting",
        _ => "Stopped",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_and_prefixes_as_cmdparse() {
        let desc = "config set name=var,type=CephString name=val,type=CephString,n=N";
        assert_eq!(prefix_of(desc), "config set");
        assert_eq!(
            serde_json::to_string(&signature(desc)).unwrap(),
            r#"["config","set",{"name":"var","type":"CephString"},{"n":"N","name":"val","type":"CephString"}]"#
        );
        assert_eq!(prefix_of("rbd mirror status mirror/img"), "rbd mirror status mirror/img");
    }

    #[test]
    fn pretty_is_cephs_json_pretty() {
        assert_eq!(
            pretty(&json!({"name": "mirror/a", "state": "Replaying"})),
            "{\n    \"name\": \"mirror/a\",\n    \"state\": \"Replaying\"\n}\n"
        );
        assert_eq!(pretty(&json!({})), "{}\n");
    }

    #[test]
    fn socket_paths_expand_cephs_metavariables() {
        let p = path(Some("/run/$cluster/$name.$id.asok"), "/var/run/ceph", "site-b", "client.rbd-mirror.b");
        assert_eq!(p, PathBuf::from("/run/site-b/client.rbd-mirror.b.rbd-mirror.b.asok"));
        let pid = std::process::id();
        let p = path(None, "/var/run/ceph", "ceph", "client.rbd-mirror.a");
        assert_eq!(p, PathBuf::from(format!("/var/run/ceph/ceph-client.rbd-mirror.a.{pid}.{pid}.asok")));
    }

    #[test]
    fn image_states_as_stock_names_them() {
        let s = |state, name: &str| ImageState { state, name: name.into(), ..Default::default() };
        assert_eq!(replayer_state(&s(MirrorImageStatusState::Replaying, "a")), "Replaying");
        assert_eq!(replayer_state(&s(MirrorImageStatusState::Syncing, "a")), "Starting");
        assert_eq!(replayer_state(&s(MirrorImageStatusState::Unknown, "")), "Starting");
        assert_eq!(replayer_state(&s(MirrorImageStatusState::Error, "a")), "Stopped");
    }
}
