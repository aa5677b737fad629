//! A process that nobody scrapes does not keep every histogram sample it records: the
//! recorder's upkeep folds them into the histogram's buckets.
//!
//! A test binary of its own: it counts the bytes the whole process holds, through a counting
//! allocator, and installs the process's one recorder.

use metrics_exporter_prometheus::PrometheusBuilder;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The bytes allocated and not yet freed.
static HELD: AtomicUsize = AtomicUsize::new(0);

struct Counting;

// SAFETY: every call is passed on to the system allocator unchanged; only a count is kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is System's.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            HELD.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is System's.
        unsafe { System.dealloc(ptr, layout) };
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MIB: usize = 1024 * 1024;

#[test]
fn histogram_samples_nobody_scrapes_are_not_kept() {
    let handle = kassa_ingress::prometheus::install_with_upkeep(
        PrometheusBuilder::new(),
        Duration::from_millis(20),
    );
    let histogram = metrics::histogram!("kassa_upkeep_test_seconds");
    histogram.record(0.001);
    let before = HELD.load(Ordering::Relaxed);

    // Each round records a million samples: about 8 MiB if they were kept, 48 MiB in all.
    for round in 1..=6 {
        for _ in 0..1_000_000 {
            histogram.record(0.001);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let held = HELD.load(Ordering::Relaxed).saturating_sub(before);
            if held < 4 * MIB {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: {:.1} MiB are still held 20 s after the samples were recorded",
                held as f64 / MIB as f64
            );
            // The process goes on recording while it waits, as a running one does.
            histogram.record(0.001);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    // The samples went to this recorder: one that dropped them would hold nothing either.
    // (A sample recorded while the upkeep drains may be missed, so "almost all" are counted.)
    let rendered = handle.render();
    let count: u64 = rendered
        .lines()
        .find_map(|line| line.strip_prefix("kassa_upkeep_test_seconds_count "))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count of the test histogram in:\n{rendered}"));
    assert!(count >= 5_990_000, "the histogram counted {count} samples");
}
