//! Thread priorities for the background writers.
//!
//! May import: what `io/mod.rs` allows its layer; this module uses nothing of the crate.

/// Puts the calling thread below the processing and learning threads (nice 10): a background
/// write (a checkpoint, a day close's tables) takes a core when one is idle, and otherwise waits
/// rather than slowing those down (the next checkpoint waits for it in any case). Embedded at
/// 25 M ratings with the recommender, on two cores, a checkpoint write at the same priority took
/// CPU from the learner, which sets the pace there.
pub fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread (Linux's nice value is per thread); a
    // failure leaves the priority as it was, which is harmless.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
    }
}
