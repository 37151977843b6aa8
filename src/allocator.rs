//! The process's allocator: mimalloc, and the two calls into the C world
//! that tune it. This is the only `unsafe` code in engage, kept in the
//! binary so the library can forbid it.
#![allow(unsafe_code)]

/// mimalloc for every allocation in the process, librdkafka's included (the
/// `override` feature replaces `malloc`/`free`): glibc's arenas lock on a
/// free from another thread, and every record crosses threads (fetched by a
/// broker thread, freed by the main loop; produced by the main loop, freed
/// by the delivery thread).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process. mimalloc maps memory
/// in large aligned regions; where THP is `always` (the default on many
/// distributions) the first touch of each region faults in a whole 2 MiB
/// page, which roughly doubles what a small instance holds and costs no
/// throughput to avoid (docs/performance.md). Linux only; if the call
/// fails nothing changes.
#[cfg(all(feature = "mimalloc", target_os = "linux"))]
pub fn tune() {
    unsafe extern "C" {
        fn prctl(option: std::ffi::c_int, ...) -> std::ffi::c_int;
    }
    const PR_SET_THP_DISABLE: std::ffi::c_int = 41;
    let (on, unused): (std::ffi::c_ulong, std::ffi::c_ulong) = (1, 0);
    // SAFETY: prctl(2) with PR_SET_THP_DISABLE takes one integer flag (the
    // rest must be 0) and touches no memory of ours.
    unsafe { prctl(PR_SET_THP_DISABLE, on, unused, unused, unused) };
}

/// Gives mimalloc's free memory back to the OS: a forced collection of the
/// calling thread's heap and a purge of the process-wide arenas. The
/// pipeline calls it once the input goes quiet
/// (`engage::pipeline::set_memory_release`).
#[cfg(feature = "mimalloc")]
pub fn release_free_memory() {
    unsafe extern "C" {
        fn mi_collect(force: bool);
    }
    // SAFETY: mi_collect takes no pointers and may be called from any
    // thread.
    unsafe { mi_collect(true) };
}
