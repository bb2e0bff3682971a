//! The settings a sweep or a benchmark run varies: thinking budgets, "Wait" counts, or steering
//! weights. Each becomes a key (`budget=100`), a number for plots, and changes to a generation.
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::generate::GenerateConfig;
use crate::runtime::Runtime;

#[derive(Args, Debug, Clone, Default)]
pub struct SweepArgs {
    /// Thinking budgets in tokens, e.g. 0,100,200,300,400,500,600
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["waits", "weights"])]
    pub budgets: Vec<usize>,
    /// Numbers of forced "Wait" continuations, e.g. 0,1,2,3
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["budgets", "weights"])]
    pub waits: Vec<usize>,
    /// Steering direction file (from `rhlens direction`), with --weights
    #[arg(long)]
    pub steer: Option<PathBuf>,
    /// Steering weights, e.g. -0.1,-0.05,0,0.05,0.1
    #[arg(
        long,
        value_delimiter = ',',
        allow_hyphen_values = true,
        requires = "steer"
    )]
    pub weights: Vec<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SweepKind {
    Budgets,
    Waits,
    Steer,
}

impl SweepKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            SweepKind::Budgets => "budgets",
            SweepKind::Waits => "waits",
            SweepKind::Steer => "steer",
        }
    }
}

/// One point of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepSetting {
    pub key: String,
    pub value: f64,
}

pub struct Sweep {
    pub kind: SweepKind,
    pub settings: Vec<SweepSetting>,
    pub steer_file: Option<PathBuf>,
    /// unscaled direction `[layers, hidden]` (model dtype and device)
    direction: Option<Tensor>,
}

impl SweepArgs {
    /// Check the flags and list the settings (no model needed).
    pub fn plan(&self) -> Result<(SweepKind, Vec<SweepSetting>)> {
        let fmt_w = |w: f64| {
            let s = format!("{w}");
            if s.contains('.') || s.contains('e') {
                s
            } else {
                format!("{s}.0")
            }
        };
        let (kind, settings): (SweepKind, Vec<SweepSetting>) = if !self.budgets.is_empty() {
            (
                SweepKind::Budgets,
                self.budgets
                    .iter()
                    .map(|&b| SweepSetting {
                        key: format!("budget={b}"),
                        value: b as f64,
                    })
                    .collect(),
            )
        } else if !self.waits.is_empty() {
            (
                SweepKind::Waits,
                self.waits
                    .iter()
                    .map(|&k| SweepSetting {
                        key: format!("waits={k}"),
                        value: k as f64,
                    })
                    .collect(),
            )
        } else if self.steer.is_some() {
            if self.weights.is_empty() {
                bail!("--steer needs --weights (e.g. --weights -0.1,0,0.1)");
            }
            if let Some(w) = self.weights.iter().find(|w| !w.is_finite()) {
                bail!("steering weight {w} is not a finite number");
            }
            (
                SweepKind::Steer,
                self.weights
                    .iter()
                    .map(|&w| SweepSetting {
                        key: format!("steer={}", fmt_w(w)),
                        value: w,
                    })
                    .collect(),
            )
        } else {
            bail!(
                "say what to sweep: --budgets LIST, --waits LIST, or --steer FILE --weights LIST"
            );
        };
        if let Some(p) = &self.steer {
            crate::steer::check_file(p)?;
        }
        let mut keys: Vec<&str> = settings.iter().map(|s| s.key.as_str()).collect();
        keys.sort_unstable();
        if keys.windows(2).any(|w| w[0] == w[1]) {
            bail!("the sweep lists a setting twice");
        }
        Ok((kind, settings))
    }

    /// Resolve against a loaded model (reads the steering direction).
    pub fn resolve(&self, rt: &Runtime) -> Result<Sweep> {
        let (kind, settings) = self.plan()?;
        let direction = match &self.steer {
            Some(p) if kind == SweepKind::Steer => crate::steer::load_scaled(p, rt, 1.0)?,
            _ => None,
        };
        Ok(Sweep {
            kind,
            settings,
            steer_file: self.steer.clone(),
            direction,
        })
    }
}

impl Sweep {
    /// The generation config and steering tensor for one setting.
    pub fn apply(
        &self,
        setting: &SweepSetting,
        base: &GenerateConfig,
    ) -> (GenerateConfig, Option<Tensor>) {
        let mut cfg = base.clone();
        let mut steering = None;
        match self.kind {
            SweepKind::Budgets => cfg.length.think_budget = Some(setting.value as usize),
            SweepKind::Waits => cfg.length.waits = setting.value as usize,
            SweepKind::Steer => {
                // weight 0 is exactly no steering
                if setting.value != 0.0 {
                    steering = self.direction.as_ref().map(|d| d * setting.value);
                }
            }
        }
        (cfg, steering)
    }
}
