//! Process-wide settings a long-running librados client needs: the allocator (jemalloc,
//! linked into the process in place of glibc's malloc, so librados and librbd allocate from
//! it too), giving free memory back to the system, and the main thread's unused stack.

use std::ffi::{c_char, c_void, CStr};

use tikv_jemalloc_sys as jemalloc;

/// jemalloc's options for this process. librados receives every object read into a fresh
/// page-aligned buffer of its size and frees it when the write sent from it is done; glibc's
/// malloc faulted each in again or fragmented its heap with them, jemalloc reuses them
/// (measurements in benches/results/TUNING.md).
/// - `narenas:1`: one arena, not four per core: librados frees in one thread what it
///   allocated in another, so per-thread arenas only add memory.
/// - `tcache_max:4096,tcache_nslots_small_min:2,tcache_nslots_small_max:16`: small per-thread
///   caches, for allocations up to 4 KiB only (librados' messages, ops and encode buffers),
///   so that these do not take the arena's lock.
/// - `dirty_decay_ms:1000,muzzy_decay_ms:0`: freed pages go back to the system within a
///   second of not being reused (the default keeps them 10 s), and at once when unused.
///
/// `MALLOC_CONF` in the environment is read after these and overrides them.
pub const JEMALLOC_OPTIONS: &CStr = c"narenas:1,tcache_max:4096,tcache_nslots_small_min:2,tcache_nslots_small_max:16,dirty_decay_ms:1000,muzzy_decay_ms:0";

/// jemalloc reads its compiled-in options from this symbol (a weak definition in jemalloc,
/// which this strong one replaces) at its first allocation, before `main`.
#[allow(non_upper_case_globals)]
#[no_mangle]
pub static malloc_conf: Option<&'static c_char> = Some(
    // SAFETY: the pointer comes from a `'static` C string literal: valid, NUL-terminated and
    // never freed or written.
    unsafe { &*JEMALLOC_OPTIONS.as_ptr() },
);

/// The allocator's settings as jemalloc applied them (`opt.*`), for the start-up log and
/// to check that jemalloc, with [`JEMALLOC_OPTIONS`], is the allocator in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocatorSettings {
    /// `opt.narenas`.
    pub narenas: u32,
    /// `opt.tcache`.
    pub tcache: bool,
    /// `opt.tcache_max`: the largest size the per-thread caches hold.
    pub tcache_max: usize,
    /// `opt.dirty_decay_ms` (-1: never decays).
    pub dirty_decay_ms: isize,
}

/// Reads jemalloc's settings; `None` if jemalloc refused a read (it is not the allocator the
/// daemon was built with).
pub fn allocator_settings() -> Option<AllocatorSettings> {
    Some(AllocatorSettings {
        narenas: read_mallctl(c"opt.narenas")?,
        tcache: read_mallctl(c"opt.tcache")?,
        tcache_max: read_mallctl(c"opt.tcache_max")?,
        dirty_decay_ms: read_mallctl(c"opt.dirty_decay_ms")?,
    })
}

/// One `mallctl` read of a plain value of type `T` (jemalloc checks the size).
fn read_mallctl<T: Copy + Default>(name: &CStr) -> Option<T> {
    let mut value = T::default();
    let mut len = std::mem::size_of::<T>();
    // SAFETY: `name` is NUL-terminated; `value` and `len` are valid for writes and `len` is
    // `value`'s size, so jemalloc writes at most that many bytes (it fails with EINVAL when
    // the setting's size differs); no new value is passed.
    let r = unsafe {
        jemalloc::mallctl(
            name.as_ptr(),
            std::ptr::addr_of_mut!(value).cast::<c_void>(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    (r == 0 && len == std::mem::size_of::<T>()).then_some(value)
}

/// Gives the allocator's free memory back to the system now (`arena.<all>.purge`): after a
/// burst of large librados buffers (an image copy, a replay burst), jemalloc otherwise waits
/// for its next allocations to decay them, and an idle daemon makes few. Costs a walk of
/// the arena's free extents: the daemon calls it every few seconds, never per operation.
/// Returns whether jemalloc did it.
pub fn release_free_memory() -> bool {
    // MALLCTL_ARENAS_ALL: every arena.
    const PURGE_ALL: &CStr = c"arena.4096.purge";
    // SAFETY: a NUL-terminated name and no old or new value (the purge takes none).
    let r = unsafe {
        jemalloc::mallctl(
            PURGE_ALL.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    r == 0
}

/// Gives back the main thread's stack pages that are no longer in use: loading librados runs
/// libceph-common's static initializers on the main thread, which touch about 1 MiB of stack
/// once (the option tables); those pages stay resident for the life of the process. Pages
/// deeper than the caller's frame (with a 64 KiB margin) are dropped with
/// `MADV_DONTNEED`: the next use of that depth faults in fresh zero pages, as for any stack
/// growth. Call from the main thread, from a shallow frame (`main`). Returns the bytes
/// released (0 when not on the main thread's stack or when the kernel refused).
pub fn release_unused_main_stack() -> usize {
    const MARGIN: usize = 64 << 10;
    let here = 0u8;
    let sp = std::ptr::addr_of!(here) as usize;
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return 0;
    };
    let Some((low, high)) = maps.lines().filter(|l| l.ends_with("[stack]")).find_map(|l| {
        let (range, _) = l.split_once(' ')?;
        let (a, b) = range.split_once('-')?;
        Some((usize::from_str_radix(a, 16).ok()?, usize::from_str_radix(b, 16).ok()?))
    }) else {
        return 0;
    };
    if !(low..high).contains(&sp) {
        return 0;
    }
    // SAFETY: `sysconf` only reads a system constant.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(1);
    let end = sp.saturating_sub(MARGIN) / page * page;
    if end <= low {
        return 0;
    }
    // SAFETY: `[low, end)` lies in this thread's own stack mapping, below the current frame
    // by more than the margin (the stack grows down, so nothing live is there: no frame, no
    // red zone, no signal frame in progress on this thread while it runs this code), and
    // `MADV_DONTNEED` on private anonymous memory only replaces those pages with zero pages
    // on their next touch.
    let r = unsafe { libc::madvise(low as *mut libc::c_void, end - low, libc::MADV_DONTNEED) };
    if r == 0 {
        end - low
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jemalloc_is_the_process_allocator_with_our_options() {
        // What librados and librbd call: the process-wide `malloc`, looked up as the dynamic
        // linker binds their calls.
        // SAFETY: a NUL-terminated symbol name; the result is only compared.
        let process_malloc = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"malloc".as_ptr()) };
        assert_eq!(
            process_malloc as usize,
            jemalloc::malloc as *const () as usize,
            "malloc is not jemalloc's"
        );
        if std::env::var_os("MALLOC_CONF").is_none() {
            let settings = allocator_settings().expect("jemalloc answers mallctl");
            assert_eq!(
                settings,
                AllocatorSettings { narenas: 1, tcache: true, tcache_max: 4096, dirty_decay_ms: 1000 }
            );
        }
        assert!(release_free_memory());
    }
}

/// The daemonized child's side of start-up: the parent waits until it says how start-up
/// went ([`Daemonized::started`]), as Ceph daemons' parents do, and exits with that status.
#[derive(Debug)]
pub struct Daemonized {
    fd: std::ffi::c_int,
}

impl Daemonized {
    /// Start-up succeeded: the parent exits 0.
    pub fn started(self) {
        // SAFETY: `fd` is the pipe's write end, owned by us and open; one byte from a valid
        // buffer.
        let _ = unsafe { libc::write(self.fd, b"0".as_ptr().cast(), 1) };
    }
}

impl Drop for Daemonized {
    fn drop(&mut self) {
        // SAFETY: our descriptor, closed once. Closed without a byte, the parent exits 1.
        unsafe { libc::close(self.fd) };
    }
}

/// Detaches the process as Ceph daemons do with `--daemonize`: forks; the parent waits for
/// the child's word on start-up and exits 0, or 1 when the child failed or died first; the
/// child starts a new session with standard input on `/dev/null` and goes on. Must run
/// while the process has a single thread (before the async runtime and any connected
/// librados handle).
pub fn daemonize() -> std::io::Result<Daemonized> {
    let mut fds = [0 as std::ffi::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let [read_end, write_end] = fds;
    // SAFETY: the caller guarantees a single thread, so the child inherits a consistent
    // process (no lock held by a thread that does not exist in the child).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid > 0 {
        // SAFETY: the parent's copy of the write end, closed once.
        unsafe { libc::close(write_end) };
        let mut byte = 0u8;
        // SAFETY: reading one byte into a valid buffer from our read end.
        let n = unsafe { libc::read(read_end, (&mut byte as *mut u8).cast(), 1) };
        if n == 1 && byte == b'0' {
            std::process::exit(0);
        }
        eprintln!("rbd-mirror-rs: the daemon did not start (see its log)");
        std::process::exit(1);
    }
    // SAFETY: the child's copy of the read end, closed once.
    unsafe { libc::close(read_end) };
    // SAFETY: no arguments; a new session for the child (it is not a group leader).
    unsafe { libc::setsid() };
    let null = std::fs::File::open("/dev/null")?;
    // SAFETY: both descriptors are open; dup2 replaces standard input atomically.
    if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Daemonized { fd: write_end })
}

/// Sends standard output and error to the end of the file at `path` (created with its
/// directory, mode 0644): the log file. Called again after the file was rotated (SIGHUP), it
/// reopens it.
pub fn redirect_output(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::OpenOptions::new().create(true).append(true).mode(0o644).open(path)?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    for target in [1, 2] {
        // SAFETY: `fd` is open for the call; dup2 atomically replaces `target`.
        if unsafe { libc::dup2(fd, target) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The user and group a daemon runs as after `--setuser`/`--setgroup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Resolves `user` (a name or a number) and `group` (likewise; none: the user's primary
/// group), as Ceph's `global_init` does for `--setuser`/`--setgroup`.
pub fn resolve_identity(user: &str, group: Option<&str>) -> std::io::Result<Identity> {
    use std::io::{Error, ErrorKind};
    let (uid, primary_gid) = match lookup_user(user)? {
        Some(found) => found,
        None => match user.parse::<u32>() {
            Ok(uid) => (uid, None),
            Err(_) => return Err(Error::new(ErrorKind::NotFound, format!("unknown user {user:?}"))),
        },
    };
    let gid = match group {
        Some(g) => match lookup_group(g)? {
            Some(gid) => gid,
            None => g
                .parse::<u32>()
                .map_err(|_| Error::new(ErrorKind::NotFound, format!("unknown group {g:?}")))?,
        },
        None => primary_gid.ok_or_else(|| {
            Error::new(ErrorKind::NotFound, format!("user {user:?} has no passwd entry: give --setgroup"))
        })?,
    };
    Ok(Identity { uid, gid })
}

/// `getpwnam_r`: the uid and primary gid of `name`, none when there is no such user.
fn lookup_user(name: &str) -> std::io::Result<Option<(u32, Option<u32>)>> {
    let Ok(c_name) = std::ffi::CString::new(name) else { return Ok(None) };
    let mut buf = vec![0 as c_char; 16 << 10];
    // SAFETY: all-zero is a valid `passwd` (integers and null pointers).
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` outlives it and its length is given;
    // the strings `pwd` points to (in `buf`) are not read.
    let ret =
        unsafe { libc::getpwnam_r(c_name.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if ret != 0 {
        return Err(std::io::Error::from_raw_os_error(ret));
    }
    Ok((!result.is_null()).then_some((pwd.pw_uid, Some(pwd.pw_gid))))
}

/// `getgrnam_r`: the gid of `name`, none when there is no such group.
fn lookup_group(name: &str) -> std::io::Result<Option<u32>> {
    let Ok(c_name) = std::ffi::CString::new(name) else { return Ok(None) };
    let mut buf = vec![0 as c_char; 64 << 10];
    // SAFETY: all-zero is a valid `group` (integers and null pointers).
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` outlives it and its length is given;
    // the strings `grp` points to (in `buf`) are not read.
    let ret =
        unsafe { libc::getgrnam_r(c_name.as_ptr(), &mut grp, buf.as_mut_ptr(), buf.len(), &mut result) };
    if ret != 0 {
        return Err(std::io::Error::from_raw_os_error(ret));
    }
    Ok((!result.is_null()).then_some(grp.gr_gid))
}

/// Ends the process with `code` without running its exit handlers: for a process that
/// gives up a librados call still under way ([`crate::blocking_calls_in_flight`], e.g. a
/// connection to monitors that do not answer), whose thread is inside librados. A normal
/// exit would run librados' static destructors beside it. Standard output and error are
/// flushed first; whatever else must reach a file must be written before.
pub fn exit_leaving_calls(code: u8) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: `_exit` ends the process at once and takes no pointer; skipping the exit
    // handlers (and C++ static destructors) is the point, and Rust's buffered output was
    // flushed above.
    unsafe { libc::_exit(i32::from(code)) }
}

/// Whether the process runs as root (real uid 0).
pub fn is_root() -> bool {
    // SAFETY: getuid cannot fail and touches no memory.
    unsafe { libc::getuid() == 0 }
}

/// Becomes `id` for good: supplementary groups set to its group alone, then the group, then
/// the user (real, effective and saved ids), and the process stays dumpable (core files, as
/// Ceph keeps them). Call while the process has one thread. Nothing to do when we already
/// are `id`; an error when we are not root.
pub fn drop_privileges(id: Identity) -> std::io::Result<()> {
    // SAFETY: getuid/getgid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    if (uid, gid) == (id.uid, id.gid) {
        return Ok(());
    }
    let gids = [id.gid];
    // SAFETY: `gids` is valid for one element, as the count says.
    if unsafe { libc::setgroups(1, gids.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: plain system calls on integers.
    if unsafe { libc::setresgid(id.gid, id.gid, id.gid) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::setresuid(id.uid, id.uid, id.uid) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: PR_SET_DUMPABLE takes one integer argument; the rest are ignored.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
    Ok(())
}
