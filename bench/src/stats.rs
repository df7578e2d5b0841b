//! Latency samples and their summary (p50, p99, mean, max).

use std::time::Duration;

/// Samples of one measurement.
#[derive(Debug, Clone)]
pub struct Latencies {
    name: String,
    samples: Vec<Duration>,
}

/// The usual percentiles of [`Latencies`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub mean: Duration,
    pub max: Duration,
}

impl Latencies {
    pub fn new(name: impl Into<String>, capacity: usize) -> Self {
        Self {
            name: name.into(),
            samples: Vec::with_capacity(capacity),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn record(&mut self, sample: Duration) {
        self.samples.push(sample);
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Nearest-rank percentiles. Panics without samples.
    pub fn summary(&self) -> Summary {
        assert!(!self.samples.is_empty(), "{}: no samples", self.name);
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        let rank = |p: f64| {
            sorted[((p / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
        };
        let total: Duration = sorted.iter().sum();
        Summary {
            count: sorted.len(),
            p50: rank(50.0),
            p99: rank(99.0),
            mean: total / sorted.len() as u32,
            max: *sorted.last().unwrap(),
        }
    }

    /// Prints a table row and a `RESULT {json}` line (times in microseconds).
    pub fn report(&self, target_p50: Option<Duration>, target_p99: Option<Duration>) -> Summary {
        let s = self.summary();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let verdict = |value: Duration, target: Option<Duration>| match target {
            Some(t) if value <= t => format!(" (target ≤ {:.0} µs: met)", us(t)),
            Some(t) => format!(" (target ≤ {:.0} µs: MISSED)", us(t)),
            None => String::new(),
        };
        println!(
            "{:<28} n={:<6} p50={:>8.1} µs{}  p99={:>8.1} µs{}  mean={:>8.1} µs  max={:>8.1} µs",
            self.name,
            s.count,
            us(s.p50),
            verdict(s.p50, target_p50),
            us(s.p99),
            verdict(s.p99, target_p99),
            us(s.mean),
            us(s.max),
        );
        println!(
            "RESULT {{\"name\":\"{}\",\"count\":{},\"p50_us\":{:.1},\"p99_us\":{:.1},\"mean_us\":{:.1},\"max_us\":{:.1}}}",
            self.name,
            s.count,
            us(s.p50),
            us(s.p99),
            us(s.mean),
            us(s.max)
        );
        s
    }
}

/// The order of two sides in round `round` of an interleaved comparison:
/// the first side first on even rounds, the second on odd ones, so neither
/// always runs right after the other.
pub fn alternate(round: usize) -> [usize; 2] {
    if round.is_multiple_of(2) {
        [0, 1]
    } else {
        [1, 0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut l = Latencies::new("t", 100);
        for ms in (1..=100).rev() {
            l.record(Duration::from_millis(ms));
        }
        let s = l.summary();
        assert_eq!(s.count, 100);
        assert_eq!(s.p50, Duration::from_millis(50));
        assert_eq!(s.p99, Duration::from_millis(99));
        assert_eq!(s.max, Duration::from_millis(100));
        assert_eq!(s.mean, Duration::from_micros(50_500));
        let mut one = Latencies::new("one", 1);
        one.record(Duration::from_millis(3));
        assert_eq!(one.summary().p99, Duration::from_millis(3));
    }
}
