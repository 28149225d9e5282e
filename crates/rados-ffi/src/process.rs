//! Process-wide settings a long-running librados client needs: allocator tuning applied once
//! at start-up, and giving free heap memory back to the system.

/// Buffers at or above this size are mapped and unmapped by the allocator instead of carved
/// from its heap. librados' receive buffers are page-aligned: kept in the heap while their
/// bytes are written on (an image copy sends each object from the buffer its read landed
/// in), they fragment it. On the lab (snapshot bench, filled 1 GiB image, 3 objects in
/// flight) objects read into the heap peaked at 70-75 MiB RSS with 0.8 s of CPU per GiB;
/// mapped, at 48 MiB with 1.0-1.1 s (every page faulted in: 262,144 faults per GiB). With 4
/// MiB reads kept in the heap (glibc's own dynamic threshold, as the stock daemon runs),
/// 88-112 MiB and 0.85 s. Journal reads (128 KiB) stay in the heap: their bytes are moved
/// out of the receive buffer at once (`IoCtx::read_shared`).
pub const MMAP_THRESHOLD: i32 = 256 << 10;

/// Tunes glibc's allocator for a daemon whose big buffers come and go: a fixed mmap
/// threshold (glibc otherwise raises it after each large free, so object-sized buffers end
/// up in a heap they fragment), and one arena instead of one per thread (librados starts
/// dozens of threads, and buffers it allocates in one thread are freed in another: with two
/// arenas the peak RSS of a journal replay was 11 MiB higher, for no CPU measured). Call once from `main`, before threads start. Returns false if glibc
/// refused a setting.
pub fn tune_allocator() -> bool {
    // SAFETY: `mallopt` only changes allocator parameters; called before other threads run
    // (and it takes the allocator's own lock anyway). The values are documented ranges.
    let mmap = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
    // SAFETY: as above.
    let arenas = unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    mmap == 1 && arenas == 1
}

/// Gives the allocator's free heap memory back to the system (`malloc_trim(0)`: free pages
/// anywhere in the heap, not only at its top). After a burst of large librados buffers (an
/// image copy, a replay burst) the heap is left fragmented: free but resident. Costs a walk
/// of the heap under the allocator's lock: the daemon calls it every few seconds, never per
/// operation. Returns whether memory was released.
pub fn release_free_memory() -> bool {
    // SAFETY: `malloc_trim` takes the allocator's locks itself and only returns free pages;
    // it is safe to call from any thread at any time.
    unsafe { libc::malloc_trim(0) == 1 }
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
