//! Latency summaries from raw microsecond samples: sort once, read nearest-rank
//! percentiles. Exact, and cheap at the sample counts a run produces (≤ a few million).

use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub count: usize,
    pub min: u32,
    pub p50: u32,
    pub p90: u32,
    pub p99: u32,
    pub p999: u32,
    pub max: u32,
    pub mean: f64,
}

impl Summary {
    pub fn from_samples(mut samples: Vec<u32>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let sum: u64 = samples.iter().map(|&s| u64::from(s)).sum();
        Self {
            count: samples.len(),
            min: samples[0],
            p50: percentile(&samples, 500),
            p90: percentile(&samples, 900),
            p99: percentile(&samples, 990),
            p999: percentile(&samples, 999),
            max: samples[samples.len() - 1],
            mean: sum as f64 / samples.len() as f64,
        }
    }

    pub fn to_json(self) -> Value {
        json!({
            "count": self.count,
            "min": self.min,
            "p50": self.p50,
            "p90": self.p90,
            "p99": self.p99,
            "p999": self.p999,
            "max": self.max,
            "mean": (self.mean * 10.0).round() / 10.0,
        })
    }

    /// One line for humans, e.g. `p50 31 µs  p90 …`.
    pub fn line(self) -> String {
        format!(
            "p50 {} µs  p90 {} µs  p99 {} µs  p99.9 {} µs  max {} µs  mean {:.1} µs  (min {} µs, n={})",
            self.p50, self.p90, self.p99, self.p999, self.max, self.mean, self.min, self.count
        )
    }
}

/// Nearest-rank percentile of sorted, non-empty samples; `per_mille` is the percentile
/// in tenths of a percent (999 = p99.9), integer so 99.9 % of 1000 is exactly rank 999.
fn percentile(sorted: &[u32], per_mille: usize) -> u32 {
    let rank = (per_mille * sorted.len()).div_ceil(1000);
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let s: Vec<u32> = (1..=1000).collect();
        let sum = Summary::from_samples(s);
        assert_eq!(sum.p50, 500);
        assert_eq!(sum.p99, 990);
        assert_eq!(sum.p999, 999);
        assert_eq!(sum.max, 1000);
        assert_eq!(sum.min, 1);
        assert!((sum.mean - 500.5).abs() < 1e-9);
    }

    #[test]
    fn single_and_empty() {
        let one = Summary::from_samples(vec![7]);
        assert_eq!((one.p50, one.p999, one.max), (7, 7, 7));
        assert_eq!(Summary::from_samples(Vec::new()).count, 0);
    }
}
