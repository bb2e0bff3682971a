//! Sequential colormaps for heatmaps (from `colorous`, the d3-scale-chromatic tables, which match
//! matplotlib's viridis family) and value normalisation.

use std::fmt;
use std::str::FromStr;

/// A perceptually uniform sequential colormap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Colormap {
    #[default]
    Viridis,
    Magma,
    Inferno,
    Plasma,
    Turbo,
    Cividis,
}

impl Colormap {
    pub const ALL: [Colormap; 6] = [
        Colormap::Viridis,
        Colormap::Magma,
        Colormap::Inferno,
        Colormap::Plasma,
        Colormap::Turbo,
        Colormap::Cividis,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Colormap::Viridis => "viridis",
            Colormap::Magma => "magma",
            Colormap::Inferno => "inferno",
            Colormap::Plasma => "plasma",
            Colormap::Turbo => "turbo",
            Colormap::Cividis => "cividis",
        }
    }

    fn gradient(self) -> colorous::Gradient {
        match self {
            Colormap::Viridis => colorous::VIRIDIS,
            Colormap::Magma => colorous::MAGMA,
            Colormap::Inferno => colorous::INFERNO,
            Colormap::Plasma => colorous::PLASMA,
            Colormap::Turbo => colorous::TURBO,
            Colormap::Cividis => colorous::CIVIDIS,
        }
    }

    /// Colour at `t` in [0, 1] (clamped).
    pub fn rgb(self, t: f64) -> [u8; 3] {
        let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
        let c = self.gradient().eval_continuous(t);
        [c.r, c.g, c.b]
    }

    /// Lookup table for fast colouring of large rasters.
    pub fn lut(self) -> ColorLut {
        let n = ColorLut::SIZE;
        ColorLut {
            table: (0..n)
                .map(|i| self.rgb(i as f64 / (n - 1) as f64))
                .collect(),
        }
    }
}

impl fmt::Display for Colormap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Colormap {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        Colormap::ALL
            .into_iter()
            .find(|c| c.name() == lower)
            .ok_or_else(|| {
                let names: Vec<_> = Colormap::ALL.iter().map(|c| c.name()).collect();
                format!(
                    "unknown colormap {s:?} (choose one of {})",
                    names.join(", ")
                )
            })
    }
}

/// A colormap sampled at [`ColorLut::SIZE`] evenly spaced points; entry 0 is the colour at 0 and
/// the last entry the colour at 1.
#[derive(Debug, Clone)]
pub struct ColorLut {
    table: Vec<[u8; 3]>,
}

impl ColorLut {
    pub const SIZE: usize = 1024;

    /// Colour at `t` in [0, 1] (clamped; NaN gives the bottom colour).
    pub fn at(&self, t: f64) -> [u8; 3] {
        let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
        self.table[(t * (Self::SIZE - 1) as f64).round() as usize]
    }
}

/// Linear map of data values onto [0, 1].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Norm {
    pub vmin: f64,
    pub vmax: f64,
}

impl Norm {
    pub fn new(vmin: f64, vmax: f64) -> Norm {
        Norm { vmin, vmax }
    }

    /// Minimum and maximum of the finite values (0..1 when there are none).
    pub fn from_values<I: IntoIterator<Item = f64>>(values: I) -> Norm {
        let mut lo = f64::INFINITY;
        let mut hi = f64::NEG_INFINITY;
        for v in values {
            if v.is_finite() {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
        if lo > hi {
            Norm::new(0.0, 1.0)
        } else {
            Norm::new(lo, hi)
        }
    }

    /// Position of `v` in [0, 1]; a constant map (vmin == vmax) sits at 0.
    pub fn t(&self, v: f64) -> f64 {
        let span = self.vmax - self.vmin;
        // Also catches a NaN span.
        if span.is_nan() || span <= 0.0 {
            return 0.0;
        }
        ((v - self.vmin) / span).clamp(0.0, 1.0)
    }

    /// The range to label on a colorbar (widened when the map is constant).
    pub fn display_range(&self) -> (f64, f64) {
        if self.vmax > self.vmin {
            (self.vmin, self.vmax)
        } else {
            let pad = if self.vmin == 0.0 {
                1.0
            } else {
                self.vmin.abs() * 0.05
            };
            (self.vmin, self.vmin + pad)
        }
    }
}
