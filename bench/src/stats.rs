//! Summaries of a sample: percentiles by linear interpolation between closest ranks (the
//! method of numpy's default and of Excel's PERCENTILE.INC), mean, min and max.

use serde::{Deserialize, Serialize};

/// The `p`-th percentile (0–100) of `sorted` (ascending), interpolating linearly between the
/// two closest ranks. `None` for an empty sample.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let frac = rank - lo as f64;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

/// A sample's size, p50, p90, p99, mean, min and max.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of values.
    pub n: usize,
    /// Smallest value.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest value.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl Summary {
    /// Summarises `values` (any order); `None` when it is empty or holds a NaN.
    pub fn of(values: &[f64]) -> Option<Self> {
        if values.iter().any(|v| v.is_nan()) {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        Some(Self {
            n: v.len(),
            min: *v.first()?,
            p50: percentile(&v, 50.0)?,
            p90: percentile(&v, 90.0)?,
            p99: percentile(&v, 99.0)?,
            max: *v.last()?,
            mean: v.iter().sum::<f64>() / v.len() as f64,
        })
    }
}

/// `value / baseline`, or `None` when the baseline is not positive.
pub fn ratio(value: f64, baseline: f64) -> Option<f64> {
    (baseline > 0.0 && value.is_finite()).then(|| value / baseline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 100.0), Some(10.0));
        // rank 0.5 * 9 = 4.5 → between 5 and 6
        assert_eq!(percentile(&v, 50.0), Some(5.5));
        // rank 0.9 * 9 = 8.1 → 9 + 0.1
        let p90 = percentile(&v, 90.0).unwrap();
        assert!((p90 - 9.1).abs() < 1e-9, "{p90}");
        let p99 = percentile(&v, 99.0).unwrap();
        assert!((p99 - 9.91).abs() < 1e-9, "{p99}");
    }

    #[test]
    fn percentile_of_one_value_is_that_value() {
        for p in [0.0, 50.0, 99.0, 100.0] {
            assert_eq!(percentile(&[7.0], p), Some(7.0));
        }
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn summary_sorts_its_input() {
        let s = Summary::of(&[30.0, 10.0, 20.0, 40.0]).unwrap();
        assert_eq!(s.n, 4);
        assert_eq!(s.min, 10.0);
        assert_eq!(s.max, 40.0);
        assert_eq!(s.p50, 25.0);
        assert_eq!(s.mean, 25.0);
        assert!(s.p90 > s.p50 && s.p99 > s.p90 && s.p99 <= s.max);
    }

    #[test]
    fn summary_refuses_empty_and_nan() {
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn ratio_needs_a_positive_baseline() {
        assert_eq!(ratio(3.0, 2.0), Some(1.5));
        assert_eq!(ratio(3.0, 0.0), None);
        assert_eq!(ratio(f64::INFINITY, 1.0), None);
    }
}
