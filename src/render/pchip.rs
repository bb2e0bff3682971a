//! Monotone piecewise cubic Hermite interpolation (PCHIP), computed as
//! `scipy.interpolate.PchipInterpolator` does (Fritsch–Butland weighted harmonic-mean
//! derivatives inside, the one-sided three-point shape-preserving rule at the ends, linear for
//! two points) so that RH-AUC curves look the same as the reference plots. Used only to draw
//! curves: RH-AUC itself is the trapezoid area of the points.

use std::fmt;

/// Why the interpolant cannot be built.
#[derive(Debug, Clone, PartialEq)]
pub enum PchipError {
    /// Fewer than two points.
    TooFewPoints,
    /// `x` and `y` differ in length.
    LengthMismatch,
    /// `x` is not strictly increasing (or holds NaN / infinity).
    NotIncreasing,
}

impl fmt::Display for PchipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PchipError::TooFewPoints => "PCHIP needs at least two points",
            PchipError::LengthMismatch => "PCHIP x and y differ in length",
            PchipError::NotIncreasing => "PCHIP x must be strictly increasing",
        })
    }
}

impl std::error::Error for PchipError {}

/// The interpolant: one cubic per interval, in powers of `x − x_k`.
#[derive(Debug, Clone)]
pub struct Pchip {
    x: Vec<f64>,
    /// Derivative at every knot.
    d: Vec<f64>,
    /// `c[k] = [c3, c2, c1, c0]` for interval k (as scipy's PPoly, highest power first).
    c: Vec<[f64; 4]>,
}

fn sign(v: f64) -> f64 {
    // numpy.sign: 0 for 0.
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// One-sided three-point derivative estimate at an end, limited to preserve shape.
fn edge_case(h0: f64, h1: f64, m0: f64, m1: f64) -> f64 {
    let d = ((2.0 * h0 + h1) * m0 - h0 * m1) / (h0 + h1);
    if sign(d) != sign(m0) {
        0.0
    } else if sign(m0) != sign(m1) && d.abs() > 3.0 * m0.abs() {
        3.0 * m0
    } else {
        d
    }
}

impl Pchip {
    pub fn new(x: &[f64], y: &[f64]) -> Result<Pchip, PchipError> {
        let n = x.len();
        if n != y.len() {
            return Err(PchipError::LengthMismatch);
        }
        if n < 2 {
            return Err(PchipError::TooFewPoints);
        }
        if x.iter().any(|v| !v.is_finite()) || x.windows(2).any(|w| w[1] <= w[0]) {
            return Err(PchipError::NotIncreasing);
        }
        let h: Vec<f64> = x.windows(2).map(|w| w[1] - w[0]).collect();
        let m: Vec<f64> = (0..n - 1).map(|k| (y[k + 1] - y[k]) / h[k]).collect();
        let mut d = vec![0.0; n];
        if n == 2 {
            d[0] = m[0];
            d[1] = m[0];
        } else {
            for k in 1..n - 1 {
                let (mk0, mk1) = (m[k - 1], m[k]);
                let flat_or_turn = sign(mk1) != sign(mk0) || mk1 == 0.0 || mk0 == 0.0;
                if !flat_or_turn {
                    let w1 = 2.0 * h[k] + h[k - 1];
                    let w2 = h[k] + 2.0 * h[k - 1];
                    let whmean = (w1 / mk0 + w2 / mk1) / (w1 + w2);
                    d[k] = 1.0 / whmean;
                }
            }
            d[0] = edge_case(h[0], h[1], m[0], m[1]);
            d[n - 1] = edge_case(h[n - 2], h[n - 3], m[n - 2], m[n - 3]);
        }
        // Hermite → power basis, as scipy.interpolate.CubicHermiteSpline.
        let c = (0..n - 1)
            .map(|k| {
                let t = (d[k] + d[k + 1] - 2.0 * m[k]) / h[k];
                [t / h[k], (m[k] - d[k]) / h[k] - t, d[k], y[k]]
            })
            .collect();
        Ok(Pchip {
            x: x.to_vec(),
            d,
            c,
        })
    }

    /// The derivative chosen at every knot.
    pub fn derivatives(&self) -> &[f64] {
        &self.d
    }

    /// Value at `xv`; outside the data range the end cubics are extended (scipy's default).
    pub fn eval(&self, xv: f64) -> f64 {
        if xv.is_nan() {
            return f64::NAN;
        }
        let n = self.x.len();
        // Interval k with x[k] <= xv < x[k+1]; the last interval is closed on the right.
        let k = match self.x.partition_point(|&b| b <= xv) {
            0 => 0,
            p => (p - 1).min(n - 2),
        };
        let s = xv - self.x[k];
        let c = &self.c[k];
        // Same accumulation order as scipy's evaluate_poly1.
        let mut res = 0.0;
        let mut z = 1.0;
        for kp in 0..4 {
            res += c[3 - kp] * z;
            if kp < 3 {
                z *= s;
            }
        }
        res
    }

    /// `n` evenly spaced samples over [x_first, x_last] (n ≥ 2), spaced as `numpy.linspace`.
    pub fn sample(&self, n: usize) -> Vec<(f64, f64)> {
        let (a, b) = (self.x[0], self.x[self.x.len() - 1]);
        let n = n.max(2);
        let step = (b - a) / (n - 1) as f64;
        (0..n)
            .map(|i| {
                let xv = if i == n - 1 { b } else { i as f64 * step + a };
                (xv, self.eval(xv))
            })
            .collect()
    }
}
