//! The process's own figures (`process_*`, the names every Prometheus
//! client uses), read when scraped.

use std::fmt;

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use super::encode::{counter, gauge};

/// Reads the process's memory, descriptors and CPU time at scrape time.
#[derive(Debug)]
pub(super) struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let (rss, fds) = crate::process::process_stats();
        gauge(
            &mut enc,
            "process_resident_memory_bytes",
            "Resident memory.",
            rss,
        )?;
        gauge(&mut enc, "process_open_fds", "Open file descriptors.", fds)?;
        counter(
            &mut enc,
            "process_cpu_seconds_total",
            "CPU time used.",
            crate::process::cpu_seconds(),
        )
    }
}
