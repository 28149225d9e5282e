//! `Rados`: one connection (a `rados_t`) to one cluster, local or peer.

use std::ffi::{c_char, CStr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::completion::{blocking, teardown};
use crate::error::{check, cstring, RadosError, Result};
use crate::ioctx::IoCtx;
use crate::sys::librados;

/// Default time allowed for reaching the monitors and authenticating.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How to reach and authenticate to a cluster.
///
/// Two shapes cover every case the daemon meets:
/// * the local cluster, as the stock daemon is started: cluster name, `ceph.conf` (or the
///   default search path, which includes `./<cluster>.conf`) and a client id whose keyring
///   the conf names;
/// * a peer, as `rbd mirror pool peer bootstrap import` stores it: explicit `mon_host` and
///   `key`, and no conf file at all (so nothing of the local cluster leaks into it).
#[derive(Clone)]
pub struct ClusterConfig {
    /// Cluster name (`ceph`, `site-b`); selects `$cluster` in conf metavariables.
    pub cluster_name: String,
    /// Client id without the `client.` prefix (`admin`, `rbd-mirror.b`).
    pub client_id: String,
    /// Conf file to read. `None` with `read_default_conf` uses Ceph's default search path.
    pub conf_file: Option<PathBuf>,
    /// Read a conf file at all (false for peers reached by `mon_host` + `key`).
    pub read_default_conf: bool,
    /// Explicit monitor addresses (overrides the conf).
    pub mon_host: Option<String>,
    /// Explicit cephx key (overrides any keyring). Never logged.
    pub key: Option<String>,
    /// Keyring file (overrides the conf).
    pub keyring: Option<PathBuf>,
    /// Time allowed for reaching a monitor and authenticating (`client_mount_timeout`).
    pub connect_timeout: Duration,
    /// Further `rados_conf_set` options, applied last.
    pub options: Vec<(String, String)>,
    /// Defaults in place of librados' own, below the conf file, `CEPH_ARGS` and `options`
    /// (Ceph's `--default-<option>` arguments): a daemon's defaults, such as `log_file`,
    /// which a library's configuration lacks.
    pub defaults: Vec<(String, String)>,
    /// `--no-mon-config`: librados takes no configuration from the monitors.
    pub no_mon_config: bool,
    /// The daemon serves the admin socket itself: librados' `admin_socket` value (conf,
    /// `CEPH_ARGS`, options) is taken for [`Rados::admin_socket`] and librados binds none.
    pub own_admin_socket: bool,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("cluster_name", &self.cluster_name)
            .field("client_id", &self.client_id)
            .field("conf_file", &self.conf_file)
            .field("mon_host", &self.mon_host)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("keyring", &self.keyring)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl ClusterConfig {
    /// The local cluster as the stock daemon reaches it: `--cluster`, `-c`, `--id`.
    pub fn local(cluster_name: &str, conf_file: Option<PathBuf>, client_id: &str) -> Self {
        ClusterConfig {
            cluster_name: cluster_name.to_owned(),
            client_id: client_id.to_owned(),
            conf_file,
            read_default_conf: true,
            mon_host: None,
            key: None,
            keyring: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            options: Vec::new(),
            defaults: Vec::new(),
            no_mon_config: false,
            own_admin_socket: false,
        }
    }

    /// A peer reached by explicit monitors and key (no conf file is read).
    pub fn peer(cluster_name: &str, client_id: &str, mon_host: &str, key: &str) -> Self {
        ClusterConfig {
            cluster_name: cluster_name.to_owned(),
            client_id: client_id.to_owned(),
            conf_file: None,
            read_default_conf: false,
            mon_host: Some(mon_host.to_owned()),
            key: Some(key.to_owned()),
            keyring: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            options: Vec::new(),
            defaults: Vec::new(),
            no_mon_config: false,
            own_admin_socket: false,
        }
    }

    fn target(&self) -> String {
        format!("cluster {} as client.{}", self.cluster_name, self.client_id)
    }

    /// The values of options `keys` as this configuration gives them (conf file,
    /// `CEPH_ARGS`, options; metavariables expanded), read without connecting: what a daemon
    /// needs before it starts (`daemonize`, `log_file`, `pid_file`). Blocking, and meant for
    /// before the async runtime exists (librados' threads of the probe are joined before
    /// it returns, so the process may fork afterwards).
    pub fn conf_values(&self, keys: &[&str]) -> Result<Vec<Option<String>>> {
        let target = self.target();
        let c_cluster = cstring("cluster name", &self.cluster_name)?;
        let c_name = cstring("client name", &format!("client.{}", self.client_id))?;
        let mut raw: librados::rados_t = std::ptr::null_mut();
        // SAFETY: out-pointer valid, strings valid; flags 0.
        let ret = unsafe { librados::rados_create2(&mut raw, c_cluster.as_ptr(), c_name.as_ptr(), 0) };
        check(ret, "rados_create2", || target.clone())?;
        let values = configure(raw, self, &target).map(|()| keys.iter().map(|k| conf_get(raw, k)).collect());
        // SAFETY: created above, never connected, shut down once; nothing else refers to it.
        unsafe { librados::rados_shutdown(raw) };
        values
    }
}

/// Owns the `rados_t`. Dropped (and the cluster handle shut down) only when the last
/// `Rados` and `IoCtx` referring to it are gone: `IoCtx` holds an `Arc` of this.
pub(crate) struct ClusterHandle {
    pub(crate) raw: librados::rados_t,
    pub(crate) name: String,
}

// SAFETY: librados documents `rados_t` as thread-safe: a connected cluster handle may be used
// from several threads at once (all of its state is behind librados' own locks, its
// configuration too: `rados_conf_set` after `rados_connect` takes the config's lock).
unsafe impl Send for ClusterHandle {}
// SAFETY: as above; `&ClusterHandle` only ever reaches thread-safe librados calls.
unsafe impl Sync for ClusterHandle {}

impl Drop for ClusterHandle {
    fn drop(&mut self) {
        let raw = SendPtr(self.raw);
        // rados_shutdown joins librados' threads: never on a runtime worker.
        teardown(move || {
            let raw = raw;
            // SAFETY: last reference (Arc dropped); every IoCtx holds an Arc to us, so all
            // of them were destroyed before.
            unsafe { librados::rados_shutdown(raw.0) }
        });
    }
}

/// A raw pointer moved to another thread (the blocking pool, for teardown) or held across
/// an await. Whoever dereferences it says, at that `unsafe` block, why the pointee is alive.
pub(crate) struct SendPtr<T>(pub(crate) *mut T);
// SAFETY: the wrapper only moves the address; every dereference is justified where it
// happens (a handle whose last owner is gone, or an op kept alive by its completion payload).
unsafe impl<T> Send for SendPtr<T> {}

/// A connection to one Ceph cluster. Cheap to clone.
#[derive(Clone)]
pub struct Rados {
    pub(crate) handle: Arc<ClusterHandle>,
    fsid: String,
    instance_id: u64,
    admin_socket: Option<String>,
}

impl std::fmt::Debug for Rados {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rados")
            .field("cluster", &self.handle.name)
            .field("fsid", &self.fsid)
            .field("instance_id", &self.instance_id)
            .finish()
    }
}

impl Rados {
    /// Connects and authenticates, within `config.connect_timeout`.
    pub async fn connect(config: &ClusterConfig) -> Result<Rados> {
        let config = config.clone();
        blocking(move || connect_blocking(&config)).await
    }

    /// The cluster name this handle was created with.
    pub fn cluster_name(&self) -> &str {
        &self.handle.name
    }

    /// The cluster's fsid.
    pub fn fsid(&self) -> &str {
        &self.fsid
    }

    /// Sets configuration option `key` of this connection at runtime (as `config set` on a
    /// Ceph daemon's admin socket does); librados checks the name and value. An in-memory
    /// change: no I/O.
    pub fn conf_set(&self, key: &str, value: &str) -> Result<()> {
        conf_set(self.handle.raw, &self.target(), key, value)
    }

    /// The admin socket path the configuration names (metavariables as librados expanded
    /// them), when the daemon serves it ([`ClusterConfig::own_admin_socket`]) and it is set.
    pub fn admin_socket(&self) -> Option<&str> {
        self.admin_socket.as_deref()
    }

    /// This client's global id, which Ceph's rbd-mirror uses as its instance id.
    pub fn instance_id(&self) -> u64 {
        self.instance_id
    }

    fn target(&self) -> String {
        format!("cluster {}", self.handle.name)
    }

    /// Looks a pool up by name.
    pub async fn pool_lookup(&self, pool: &str) -> Result<i64> {
        let c_pool = cstring("pool name", pool)?;
        let handle = self.handle.clone();
        let target = format!("pool {pool} in cluster {}", self.handle.name);
        blocking(move || {
            // SAFETY: `handle` keeps the cluster alive; `c_pool` is a valid C string.
            let id = unsafe { librados::rados_pool_lookup(handle.raw, c_pool.as_ptr()) };
            if id < 0 {
                Err(RadosError::Call { op: "rados_pool_lookup", target, errno: (-id) as i32 })
            } else {
                Ok(id)
            }
        })
        .await
    }

    /// The name of the pool with id `pool_id`.
    pub async fn pool_reverse_lookup(&self, pool_id: i64) -> Result<String> {
        pool_reverse_lookup(self.handle.clone(), pool_id).await
    }

    /// Names of every pool in the cluster.
    pub async fn pool_list(&self) -> Result<Vec<String>> {
        let handle = self.handle.clone();
        let target = self.target();
        blocking(move || {
            let mut len = 4096usize;
            for _ in 0..8 {
                let mut buf = vec![0 as c_char; len];
                // SAFETY: connected cluster; `buf` has `len` bytes. Returns the length needed.
                let ret = unsafe { librados::rados_pool_list(handle.raw, buf.as_mut_ptr(), buf.len()) };
                check(ret, "rados_pool_list", || target.clone())?;
                let need = ret as usize;
                if need > buf.len() {
                    len = need;
                    continue;
                }
                let bytes: Vec<u8> = buf.iter().take(need).map(|&c| c as u8).collect();
                return Ok(bytes
                    .split(|&b| b == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect());
            }
            Err(RadosError::BadReply { op: "rados_pool_list", target, detail: "list kept growing".into() })
        })
        .await
    }

    /// Opens an I/O context on `pool`, namespace `namespace` ("" is the default one).
    pub async fn ioctx(&self, pool: &str, namespace: &str) -> Result<IoCtx> {
        IoCtx::open(self.handle.clone(), pool, namespace).await
    }

    /// Runs a monitor command (JSON), returning its output buffer and status string.
    pub async fn mon_command(&self, cmd: &serde_json::Value, input: Bytes) -> Result<(Bytes, String)> {
        let prefix = cmd.get("prefix").and_then(|p| p.as_str()).unwrap_or("?").to_owned();
        let c_cmd = cstring("mon command", &cmd.to_string())?;
        let handle = self.handle.clone();
        let target = self.target();
        blocking(move || {
            let cmds = [c_cmd.as_ptr()];
            let mut outbuf: *mut c_char = std::ptr::null_mut();
            let mut outbuf_len: usize = 0;
            let mut outs: *mut c_char = std::ptr::null_mut();
            let mut outs_len: usize = 0;
            // SAFETY: every pointer is valid for the call; librados allocates the out buffers,
            // which we free below with rados_buffer_free.
            let ret = unsafe {
                librados::rados_mon_command(
                    handle.raw,
                    cmds.as_ptr().cast_mut(),
                    1,
                    input.as_ptr().cast(),
                    input.len(),
                    &mut outbuf,
                    &mut outbuf_len,
                    &mut outs,
                    &mut outs_len,
                )
            };
            // SAFETY: buffers returned by librados (or null), each freed exactly once.
            let (out, status) = unsafe { (take_buffer(outbuf, outbuf_len), take_buffer(outs, outs_len)) };
            let status = String::from_utf8_lossy(&status).trim_end().to_owned();
            if ret < 0 {
                return Err(RadosError::MonCommand { prefix, target, errno: -ret, status });
            }
            Ok((out, status))
        })
        .await
    }

    /// `ceph config-key get KEY`: the raw value, or `None` when the key does not exist.
    pub async fn config_key_get(&self, key: &str) -> Result<Option<Bytes>> {
        let cmd = serde_json::json!({"prefix": "config-key get", "key": key});
        match self.mon_command(&cmd, Bytes::new()).await {
            Ok((out, _)) => Ok(Some(out)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The value of configuration option `key` as this connection sees it: the conf file,
    /// `CEPH_ARGS`, options set before connecting, and the monitors' configuration database
    /// (which updates it while connected), with Ceph's precedence. `None` for an option
    /// librados does not know. An in-memory lookup: no I/O.
    pub fn conf_get(&self, key: &str) -> Option<String> {
        conf_get(self.handle.raw, key)
    }

    /// `ceph config get WHO KEY`: the value from the monitors' configuration database.
    pub async fn config_get(&self, who: &str, key: &str) -> Result<String> {
        let cmd = serde_json::json!({"prefix": "config get", "who": who, "key": key});
        let (out, _) = self.mon_command(&cmd, Bytes::new()).await?;
        Ok(String::from_utf8_lossy(&out).trim().to_owned())
    }
}

/// The name of the pool with id `pool_id` in the cluster of `handle`.
pub(crate) async fn pool_reverse_lookup(handle: Arc<ClusterHandle>, pool_id: i64) -> Result<String> {
    let target = format!("pool id {pool_id} in cluster {}", handle.name);
    blocking(move || {
        let mut buf = vec![0 as c_char; 256];
        for _ in 0..4 {
            // SAFETY: connected cluster; `buf` has `buf.len()` bytes; librados writes a
            // NUL-terminated name or returns -ERANGE.
            let ret = unsafe {
                librados::rados_pool_reverse_lookup(handle.raw, pool_id, buf.as_mut_ptr(), buf.len())
            };
            if ret == -libc::ERANGE {
                buf = vec![0 as c_char; buf.len() * 4];
                continue;
            }
            check(ret, "rados_pool_reverse_lookup", || target.clone())?;
            let bytes: Vec<u8> = buf.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
            return Ok(String::from_utf8_lossy(&bytes).into_owned());
        }
        Err(RadosError::BadReply { op: "rados_pool_reverse_lookup", target, detail: "name too long".into() })
    })
    .await
}

/// Copies a librados-allocated buffer into `Bytes` and frees it.
///
/// # Safety
/// `ptr` is null or a buffer of `len` bytes allocated by librados, not freed before.
pub(crate) unsafe fn take_buffer(ptr: *mut c_char, len: usize) -> Bytes {
    if ptr.is_null() {
        return Bytes::new();
    }
    // SAFETY: per the contract, `ptr` points to `len` readable bytes.
    let out = Bytes::copy_from_slice(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) });
    // SAFETY: allocated by librados, freed once.
    unsafe { librados::rados_buffer_free(ptr) };
    out
}

/// Options whose Ceph default (Pacific) we change unless the conf or `CEPH_ARGS` set them:
/// (name, Ceph's default as `rados_conf_get` prints it, ours). `ms_async_op_threads`:
/// messenger worker threads of a handle; each has its own buffers and stack, and one keeps
/// up with a daemon's traffic to one cluster (benches/results/TUNING.md).
/// `objecter_tick_interval`: the objecter pings every watch once a tick; a daemon holds
/// about two watches per mirrored image, and the OSD drops a watch only after
/// `osd_client_watch_timeout` (30 s) without a ping, so 10 s still pings three times in
/// that window and halves the pings of an idle daemon (issue 16's idle goal).
const CLIENT_DEFAULTS: &[(&str, &str, &str)] =
    &[("ms_async_op_threads", "3", "1"), ("objecter_tick_interval", "5.000000", "10")];

fn conf_set(raw: librados::rados_t, target: &str, key: &str, value: &str) -> Result<()> {
    let k = cstring("conf option", key)?;
    let v = cstring("conf value", value)?;
    // SAFETY: `raw` is a created, unconnected handle; both strings are valid.
    let ret = unsafe { librados::rados_conf_set(raw, k.as_ptr(), v.as_ptr()) };
    check(ret, "rados_conf_set", || format!("{target} option {key}"))?;
    Ok(())
}

/// Applies `config` to a created, unconnected handle: the conf file and `CEPH_ARGS` (when
/// `read_default_conf`), our client defaults, monitors, key, keyring, timeout, options.
fn configure(raw: librados::rados_t, config: &ClusterConfig, target: &str) -> Result<()> {
    let target = target.to_owned();
    if !config.defaults.is_empty() || config.no_mon_config {
        // `--default-<option> <value>` sets the option at Ceph's default level, which the
        // conf file and everything after it override (the first argument is the program's).
        let mut args = vec![cstring("argument", "rbd-mirror-rs")?];
        for (key, value) in &config.defaults {
            args.push(cstring("argument", &format!("--default-{key}"))?);
            args.push(cstring("conf value", value)?);
        }
        if config.no_mon_config {
            args.push(cstring("argument", "--no-mon-config")?);
        }
        let mut argv: Vec<*const std::ffi::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        // Never more than `argv` holds (a handful in practice).
        let argc = std::ffi::c_int::try_from(argv.len()).unwrap_or(std::ffi::c_int::MAX);
        // SAFETY: handle created and not connected; `argv` holds at least `argc` valid C strings
        // that outlive the call (librados copies what it keeps).
        let ret = unsafe { librados::rados_conf_parse_argv(raw, argc, argv.as_mut_ptr()) };
        check(ret, "rados_conf_parse_argv", || format!("{target} default options"))?;
    }
    if config.read_default_conf {
        let path = match &config.conf_file {
            Some(p) => Some(cstring("conf path", &p.to_string_lossy())?),
            None => None,
        };
        let ptr = path.as_ref().map_or(std::ptr::null(), |p| p.as_ptr());
        // SAFETY: handle created and not connected; `ptr` is null (default search) or valid.
        let ret = unsafe { librados::rados_conf_read_file(raw, ptr) };
        check(ret, "rados_conf_read_file", || {
            format!(
                "{target} ({})",
                config.conf_file.as_ref().map_or("default search path".into(), |p| p.display().to_string())
            )
        })?;
        // CEPH_ARGS, as the stock tools honour it.
        // SAFETY: null means "the CEPH_ARGS environment variable".
        let ret = unsafe { librados::rados_conf_parse_env(raw, std::ptr::null()) };
        check(ret, "rados_conf_parse_env", || target.clone())?;
    }
    // Our defaults where the conf and CEPH_ARGS left Ceph's.
    for &(key, ceph_default, ours) in CLIENT_DEFAULTS {
        if conf_get(raw, key).as_deref() == Some(ceph_default) {
            conf_set(raw, &target, key, ours)?;
        }
    }
    if let Some(mon_host) = &config.mon_host {
        conf_set(raw, &target, "mon_host", mon_host)?;
    }
    if let Some(key) = &config.key {
        conf_set(raw, &target, "key", key)?;
    }
    if let Some(keyring) = &config.keyring {
        conf_set(raw, &target, "keyring", &keyring.to_string_lossy())?;
    }
    let secs = config.connect_timeout.as_secs().max(1).to_string();
    conf_set(raw, &target, "client_mount_timeout", &secs)?;
    for (k, v) in &config.options {
        conf_set(raw, &target, k, v)?;
    }
    Ok(())
}

fn connect_blocking(config: &ClusterConfig) -> Result<Rados> {
    let target = config.target();
    let c_cluster = cstring("cluster name", &config.cluster_name)?;
    let c_name = cstring("client name", &format!("client.{}", config.client_id))?;
    let mut raw: librados::rados_t = std::ptr::null_mut();
    // SAFETY: out-pointer valid, strings valid; flags 0.
    let ret = unsafe { librados::rados_create2(&mut raw, c_cluster.as_ptr(), c_name.as_ptr(), 0) };
    check(ret, "rados_create2", || target.clone())?;
    // From here on, `handle`'s Drop shuts the handle down on every error path.
    let handle = Arc::new(ClusterHandle { raw, name: config.cluster_name.clone() });

    configure(raw, config, &target)?;
    let admin_socket = if config.own_admin_socket {
        let path = conf_get(raw, "admin_socket").filter(|p| !p.is_empty());
        conf_set(raw, &target, "admin_socket", "")?;
        path
    } else {
        None
    };

    // SAFETY: configured handle, connected once.
    let ret = unsafe { librados::rados_connect(raw) };
    if ret < 0 {
        let errno = -ret;
        return Err(match errno {
            libc::EACCES | libc::EPERM => RadosError::Authentication { target, errno },
            libc::ETIMEDOUT => RadosError::ConnectTimeout {
                target,
                mon_host: conf_get(raw, "mon_host").unwrap_or_default(),
                timeout: config.connect_timeout,
            },
            _ => RadosError::Call { op: "rados_connect", target, errno },
        });
    }

    let mut buf = [0 as c_char; 64];
    // SAFETY: connected handle; `buf` has the stated length.
    let ret = unsafe { librados::rados_cluster_fsid(raw, buf.as_mut_ptr(), buf.len()) };
    check(ret, "rados_cluster_fsid", || target.clone())?;
    // SAFETY: librados NUL-terminates the fsid within `buf`.
    let fsid = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned();
    // SAFETY: connected handle.
    let instance_id = unsafe { librados::rados_get_instance_id(raw) };
    Ok(Rados { handle, fsid, instance_id, admin_socket })
}

/// Reads a config option back from a created handle (used for error messages).
fn conf_get(raw: librados::rados_t, key: &str) -> Option<String> {
    let k = cstring("conf option", key).ok()?;
    let mut buf = vec![0 as c_char; 1024];
    // SAFETY: `raw` is a created handle; `buf` has the stated length.
    let ret = unsafe { librados::rados_conf_get(raw, k.as_ptr(), buf.as_mut_ptr(), buf.len()) };
    if ret < 0 {
        return None;
    }
    // SAFETY: librados NUL-terminates within `buf` on success.
    Some(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `conf_values` of `log_file` for a conf file holding `conf`, with a daemon default.
    fn log_file_with(conf: &str) -> Option<String> {
        let dir =
            std::env::temp_dir().join(format!("rados-ffi-defaults-{}-{}", std::process::id(), conf.len()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.conf");
        std::fs::write(&path, format!("[global]\nmon host = 192.0.2.1\n{conf}")).unwrap();
        let mut cfg = ClusterConfig::local("t", Some(path), "rbd-mirror.x");
        cfg.defaults = vec![("log_file".into(), "/var/log/ceph/$cluster-$name.log".into())];
        let values = cfg.conf_values(&["log_file"]).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        values.into_iter().next().flatten()
    }

    #[test]
    fn defaults_sit_below_the_conf_file() {
        // The default, metavariables expanded, where the conf says nothing.
        assert_eq!(log_file_with("").as_deref(), Some("/var/log/ceph/t-client.rbd-mirror.x.log"));
        // The conf's value wins, an empty one too (no log file).
        assert_eq!(log_file_with("log file = /srv/x.log\n").as_deref(), Some("/srv/x.log"));
        assert_eq!(log_file_with("[client]\nlog file =\n").as_deref(), Some(""));
    }
}
