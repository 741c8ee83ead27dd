//! The gateway's memory allocator: jemalloc, which gives what it no longer uses back to the
//! system by itself (a background thread returns pages unused for a second).
//!
//! With glibc's allocator the gateway's resident memory followed its history rather than its
//! load: tokio's threads free what other threads allocated, glibc's per-thread arenas fragment,
//! and a few live allocations pin whole pages that `malloc_trim` cannot return. Measured with
//! 1,000 functions deployed, called once and deleted, twice over (`tests/queue_hostile.rs`):
//! glibc kept 13.4 MiB after the first thousand and 23.7 MiB after the second (its live heap
//! was under 2 MiB each time); jemalloc kept 12.5 and 13.7 MiB. Trimming by hand when a
//! replica's last connection closed, as the gateway did before, is not needed any more.

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Read by jemalloc when it starts: pages unused for a second go back to the system, from a
/// background thread (not from the request path).
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";
