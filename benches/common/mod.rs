//! What the benchmarks share.
#![allow(dead_code)] // each benchmark uses a part of what is here

/// The process's peak resident memory (VmHWM) in KiB, 0 where /proc does not say.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds this thread has used: on a machine shared with other work, the figure that
/// says what the work costs, where wall time says what else ran.
pub fn thread_cpu_secs() -> f64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID) {
        Ok(t) => t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9,
        Err(_) => 0.0,
    }
}
