//! The settings a sweep or a benchmark run varies: thinking budgets, "Wait" counts, or steering
//! weights. Each becomes a key (`budget=100`), a number for plots, and changes to a generation.
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::error::invalid;
use crate::generate::GenerateConfig;
use crate::runtime::Runtime;

/// What a sweep varies, over which values: checked and turned into settings by
/// [`SweepPlan::plan`] (no model needed) and into a [`Sweep`] by [`SweepPlan::resolve`].
#[derive(Debug, Clone, PartialEq)]
pub enum SweepPlan {
    /// thinking budgets in tokens
    Budgets(Vec<usize>),
    /// numbers of forced "Wait" continuations
    Waits(Vec<usize>),
    /// weights of the steering direction in `file` (from `rhlens direction`)
    Steer { file: PathBuf, weights: Vec<f64> },
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

impl SweepPlan {
    pub fn budgets(budgets: Vec<usize>) -> Self {
        Self::Budgets(budgets)
    }

    pub fn waits(waits: Vec<usize>) -> Self {
        Self::Waits(waits)
    }

    pub fn steer(file: PathBuf, weights: Vec<f64>) -> Self {
        Self::Steer { file, weights }
    }

    /// Check the plan and list its settings (no model needed).
    pub fn plan(&self) -> Result<(SweepKind, Vec<SweepSetting>)> {
        let counts = |key: &str, values: &[usize]| -> Vec<SweepSetting> {
            values
                .iter()
                .map(|&n| SweepSetting {
                    key: format!("{key}={n}"),
                    value: n as f64,
                })
                .collect()
        };
        let (kind, settings) = match self {
            Self::Budgets(b) if b.is_empty() => return invalid("budgets", "lists no budget"),
            Self::Waits(w) if w.is_empty() => return invalid("waits", "lists no count"),
            Self::Budgets(b) => (SweepKind::Budgets, counts("budget", b)),
            Self::Waits(w) => (SweepKind::Waits, counts("waits", w)),
            Self::Steer { file, weights } => (SweepKind::Steer, steer_settings(file, weights)?),
        };
        let mut keys: Vec<&str> = settings.iter().map(|s| s.key.as_str()).collect();
        keys.sort_unstable();
        if keys.windows(2).any(|w| w[0] == w[1]) {
            bail!("the sweep lists a setting twice");
        }
        Ok((kind, settings))
    }

    /// Refuse a plan whose settings could not all take effect with `base` (see [`check_settings`]).
    pub fn check(&self, base: &GenerateConfig, samples: usize) -> Result<()> {
        let (kind, settings) = self.plan()?;
        check_settings(kind, &settings, base, samples)
    }

    /// Resolve against a loaded model (reads the steering direction).
    pub fn resolve(&self, rt: &Runtime) -> Result<Sweep> {
        let (kind, settings) = self.plan()?;
        let (steer_file, direction) = match self {
            Self::Steer { file, .. } => (
                Some(file.clone()),
                crate::steer::load_scaled(file, rt, 1.0)?,
            ),
            _ => (None, None),
        };
        Ok(Sweep {
            kind,
            settings,
            steer_file,
            direction,
        })
    }
}

/// One setting per steering weight (`steer=0.05`, `steer=0.0`), after checking the file.
fn steer_settings(file: &Path, weights: &[f64]) -> Result<Vec<SweepSetting>> {
    if weights.is_empty() {
        return invalid("steer", "needs `weights` (e.g. `weights` -0.1,0,0.1)");
    }
    if let Some(w) = weights.iter().find(|w| !w.is_finite()) {
        bail!("steering weight {w} is not a finite number");
    }
    crate::steer::check_file(file)?;
    let key = |w: f64| {
        let s = format!("{w}");
        if s.contains('.') || s.contains('e') {
            s
        } else {
            format!("{s}.0")
        }
    };
    Ok(weights
        .iter()
        .map(|&w| SweepSetting {
            key: format!("steer={}", key(w)),
            value: w,
        })
        .collect())
}

/// Refuse settings that would silently do nothing, so no two rows of a sweep or an evaluation
/// differ only in a label: a budget the token limit cuts before it is reached (those rows would
/// all be the same cut-off chain), a thinking budget given to a sweep that sets its own, and
/// several samples per setting under greedy decoding (identical samples).
pub fn check_settings(
    kind: SweepKind,
    settings: &[SweepSetting],
    base: &GenerateConfig,
    samples: usize,
) -> Result<()> {
    if kind == SweepKind::Budgets {
        if let Some(b) = base.length.think_budget {
            return invalid(
                "think_budget",
                format!("{b} has no effect in a budget sweep: each setting sets the budget"),
            );
        }
        let largest = settings.iter().map(|s| s.value as usize).max().unwrap_or(0);
        let limit = base.max_new_tokens;
        if largest >= limit {
            return invalid(
                "budgets",
                format!(
                    "reach {largest}, but generation stops at `max_new_tokens` {limit}: budgets \
                     from {limit} on would all give the same cut-off chain; raise `max_new_tokens` \
                     above the largest budget plus room for the answer"
                ),
            );
        }
    }
    if samples > 1 && base.sampling.is_greedy() {
        return invalid(
            "samples",
            format!(
                "{samples} under greedy decoding would be {samples} identical generations; \
                 sample instead (`temperature`, `top_p`, `top_k`)"
            ),
        );
    }
    Ok(())
}

impl Sweep {
    /// Refuse settings that could not all take effect with `base` (see [`check_settings`]).
    pub fn check(&self, base: &GenerateConfig, samples: usize) -> Result<()> {
        check_settings(self.kind, &self.settings, base, samples)
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::InvalidSetting;

    fn keys(plan: SweepPlan) -> Vec<String> {
        let (_, settings) = plan.plan().unwrap();
        settings.into_iter().map(|s| s.key).collect()
    }

    #[test]
    fn plans_list_their_settings_by_key() {
        assert_eq!(
            keys(SweepPlan::budgets(vec![0, 100])),
            ["budget=0", "budget=100"]
        );
        assert_eq!(keys(SweepPlan::waits(vec![2])), ["waits=2"]);
        let (kind, _) = SweepPlan::waits(vec![1]).plan().unwrap();
        assert_eq!(kind, SweepKind::Waits);
    }

    #[test]
    fn plans_name_the_setting_they_lack() {
        let e = SweepPlan::steer("d.safetensors".into(), vec![])
            .plan()
            .unwrap_err();
        let setting = e.downcast_ref::<InvalidSetting>().unwrap();
        assert_eq!(setting.setting, "steer");
        assert_eq!(
            setting.to_string(),
            "steer needs weights (e.g. weights -0.1,0,0.1)"
        );
        assert!(SweepPlan::budgets(vec![5, 5]).plan().is_err());
        assert!(SweepPlan::budgets(vec![]).plan().is_err());
    }
}
