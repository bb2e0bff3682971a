//! The mean and 95% interval of values across traces, as aggregate figures report them: the mean
//! ± t(0.975, n−1) · s / √n, with `s` the sample standard deviation (n − 1 in the denominator).
//! Student's t rather than 1.96 because groups are often small (ten questions per model and
//! setting); the quantile is computed here (regularised incomplete beta, then bisection) to
//! better than 1e-9, so no table limits the group size.

use serde::{Deserialize, Serialize};

/// Mean and 95% interval of one quantity at each x (layer, position bin, step). `None` where
/// there is no value (mean) or fewer than two (interval).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub mean: Vec<Option<f64>>,
    pub lo: Vec<Option<f64>>,
    pub hi: Vec<Option<f64>>,
    /// Traces that have a value at each x.
    pub n: Vec<usize>,
}

impl Stat {
    /// The statistics of `columns[i]` (the values across traces at x = i).
    pub fn of(columns: &[Vec<f64>]) -> Stat {
        let mut out = Stat::default();
        for values in columns {
            let (mean, interval) = mean_interval(values);
            out.mean.push(mean);
            out.lo.push(interval.map(|i| i.0));
            out.hi.push(interval.map(|i| i.1));
            out.n.push(values.len());
        }
        out
    }
}

/// The mean of `values` and its 95% interval (`None` for fewer than two values).
pub fn mean_interval(values: &[f64]) -> (Option<f64>, Option<(f64, f64)>) {
    let n = values.len();
    if n == 0 {
        return (None, None);
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (Some(mean), None);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let half = t_quantile_975((n - 1) as f64) * (var / n as f64).sqrt();
    (Some(mean), Some((mean - half, mean + half)))
}

/// The 0.975 quantile of Student's t with `df` degrees of freedom.
pub fn t_quantile_975(df: f64) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 1.0e4f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if t_cdf(mid, df) < 0.975 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Student's t distribution function at `t ≥ 0`.
fn t_cdf(t: f64, df: f64) -> f64 {
    let x = df / (df + t * t);
    1.0 - 0.5 * incomplete_beta(0.5 * df, 0.5, x)
}

/// Regularised incomplete beta I_x(a, b) (continued fraction, Numerical Recipes §6.4).
fn incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_fraction(a, b, x) / a
    } else {
        1.0 - front * beta_fraction(b, a, 1.0 - x) / b
    }
}

fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..500 {
        let m = m as f64;
        let m2 = 2.0 * m;
        for aa in [
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ] {
            d = 1.0 + aa * d;
            d = if d.abs() < TINY { TINY } else { d };
            c = 1.0 + aa / c;
            c = if c.abs() < TINY { TINY } else { c };
            d = 1.0 / d;
            h *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, nine terms: ~1e-15 relative).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Quantiles from a t table (scipy.stats.t.ppf(0.975, df)).
    #[test]
    fn t_quantiles_match_the_table() {
        for (df, q) in [
            (1.0, 12.706_204_736_174_694),
            (2.0, 4.302_652_729_749_462),
            (9.0, 2.262_157_162_798_205),
            (30.0, 2.042_272_456_301_237_8),
            (1000.0, 1.962_339_080_826_408_3),
        ] {
            let got = t_quantile_975(df);
            assert!((got - q).abs() < 1e-9, "df {df}: {got} vs {q}");
        }
    }

    #[test]
    fn one_value_has_a_mean_and_no_interval() {
        assert_eq!(mean_interval(&[0.25]), (Some(0.25), None));
        assert_eq!(mean_interval(&[]), (None, None));
        let (m, i) = mean_interval(&[1.0, 3.0]);
        assert_eq!(m, Some(2.0));
        let (lo, hi) = i.unwrap();
        // s = √2, half = 12.7062 · √2 / √2
        assert!((hi - 2.0 - 12.706_204_736_174_694).abs() < 1e-9 && (lo + hi - 4.0).abs() < 1e-12);
    }
}
