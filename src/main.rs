//! The `blindspot` command: parses arguments and dispatches to the library (see `cli`).

mod cli;

fn main() {
    tune_allocator();
    std::process::exit(cli::main());
}

/// glibc's allocator maps every block above its threshold afresh and returns the top of a heap
/// to the kernel once 128 KiB or more of it is free. The filter's joins allocate and free
/// vector batches of megabytes each (two DINOv2 vectors per candidate), so it page-faulted
/// through them again and again: a seventh of the filter's time. Blocks up to 32 MiB now come
/// from the heap, and up to 64 MiB of free heap is kept for reuse (filter
/// 7.1-7.7 s -> 5.4 s on the 1M benchmark root). `GLIBC_TUNABLES` set by a user still wins
/// for what it names.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("GLIBC_TUNABLES").is_none() {
        // SAFETY: mallopt changes two allocator parameters before any thread is started; it
        // has no memory-safety preconditions.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
        }
    }
}
