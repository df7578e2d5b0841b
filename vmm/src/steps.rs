//! How long each step of making a sandbox takes: the histogram
//! `wrenn_create_step_seconds{step}` in the process's default Prometheus
//! registry (the host agent serves it at `/metrics`).
//!
//! Steps of the namespace runtime (`create` runs the blocking ones beside
//! the network): `reserve`, `directory`, `network`, `cgroup`, `disk`,
//! `userns`, `create`; `start`: `template`, `loop`, `rootfs`, `spawn`,
//! `record`, `start`. The host agent adds its own (`admission`,
//! `runtime_create`, `runtime_start`, `guest_ready`, `total`).
//!
//! Design: one histogram vector, a label per step; a step is observed when it
//! ends, successful or not, so a slow failure shows too.

use std::sync::LazyLock;
use std::time::Instant;

use prometheus::{HistogramOpts, HistogramVec};

/// 50 µs … ~3.3 s, doubling.
fn buckets() -> Vec<f64> {
    prometheus::exponential_buckets(50e-6, 2.0, 17).expect("valid buckets")
}

static STEPS: LazyLock<HistogramVec> = LazyLock::new(|| {
    let h = HistogramVec::new(
        HistogramOpts::new(
            "wrenn_create_step_seconds",
            "Time of each step of making a sandbox",
        )
        .buckets(buckets()),
        &["step"],
    )
    .expect("valid histogram");
    if let Err(e) = prometheus::register(Box::new(h.clone())) {
        tracing::warn!(error = %e, "registering the create-step histogram");
    }
    h
});

/// Records that `step` began at `since` and ends now.
pub fn observe(step: &'static str, since: Instant) {
    STEPS
        .with_label_values(&[step])
        .observe(since.elapsed().as_secs_f64());
}

/// Runs `f` as `step`.
pub fn time<T>(step: &'static str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = f();
    observe(step, t);
    out
}

/// Awaits `fut` as `step`.
pub async fn timed<T>(step: &'static str, fut: impl std::future::Future<Output = T>) -> T {
    let t = Instant::now();
    let out = fut.await;
    observe(step, t);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_counted_per_label_in_the_default_registry() {
        let before = STEPS.with_label_values(&["test-step"]).get_sample_count();
        time("test-step", || {
            std::thread::sleep(std::time::Duration::from_millis(2))
        });
        let h = STEPS.with_label_values(&["test-step"]);
        assert_eq!(h.get_sample_count(), before + 1);
        assert!(h.get_sample_sum() >= 0.002, "{}", h.get_sample_sum());
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&prometheus::gather())
            .unwrap();
        assert!(
            text.contains("wrenn_create_step_seconds_bucket{step=\"test-step\""),
            "{text}"
        );
    }
}
