//! Token selection, with Hugging Face's logits processors in Hugging Face's order: repetition
//! penalty, minimum new tokens (end-of-sequence suppressed), temperature, top-k, top-p, then
//! softmax + multinomial (or argmax when greedy). Same ops, so a seeded run draws the same tokens.
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::invalid;

/// How the next token is picked from the (penalised) scores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// The highest score.
    Greedy,
    /// A draw from the softmax after temperature, top-k (0: off) and top-p (1.0: off).
    Sample {
        temperature: f64,
        top_k: usize,
        top_p: f64,
    },
}

/// Sampling settings: the mode, plus what applies in either mode. Serialized flat (`greedy`,
/// `temperature`, `top_p`, `top_k`, `repetition_penalty`, `seed`) as saved traces record it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "FlatSampling", from = "FlatSampling")]
pub struct SamplingConfig {
    pub mode: Sampling,
    /// Hugging Face's repetition penalty over prompt and generated ids (1.0: off).
    pub repetition_penalty: f64,
    /// Seeds libtorch's generator before generating. Kept in greedy mode too: runs record it and
    /// derive per-sample seeds from it.
    pub seed: Option<u64>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            mode: Sampling::Greedy,
            repetition_penalty: 1.0,
            seed: None,
        }
    }
}

impl SamplingConfig {
    pub fn is_greedy(&self) -> bool {
        self.mode == Sampling::Greedy
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if let Sampling::Sample {
            temperature, top_p, ..
        } = self.mode
        {
            if !(temperature > 0.0) || !temperature.is_finite() {
                return invalid(
                    "temperature",
                    format!("must be a positive number (got {temperature})"),
                );
            }
            if !(top_p > 0.0 && top_p <= 1.0) {
                return invalid("top_p", format!("must be in (0, 1] (got {top_p})"));
            }
        }
        let penalty = self.repetition_penalty;
        if !(penalty > 0.0) || !penalty.is_finite() {
            return invalid(
                "repetition_penalty",
                format!("must be a positive number (got {penalty})"),
            );
        }
        Ok(())
    }

    /// Seed libtorch's global generator (which `multinomial` draws from).
    pub fn apply_seed(&self) {
        if let Some(s) = self.seed {
            tch::manual_seed(s as i64);
        }
    }
}

/// The saved form of [`SamplingConfig`]. Greedy settings are written with the neutral
/// temperature, top-p and top-k.
#[derive(Serialize, Deserialize)]
struct FlatSampling {
    greedy: bool,
    temperature: f64,
    top_p: f64,
    top_k: usize,
    repetition_penalty: f64,
    seed: Option<u64>,
}

impl From<SamplingConfig> for FlatSampling {
    fn from(c: SamplingConfig) -> Self {
        let (greedy, temperature, top_k, top_p) = match c.mode {
            Sampling::Greedy => (true, 1.0, 0, 1.0),
            Sampling::Sample {
                temperature,
                top_k,
                top_p,
            } => (false, temperature, top_k, top_p),
        };
        Self {
            greedy,
            temperature,
            top_p,
            top_k,
            repetition_penalty: c.repetition_penalty,
            seed: c.seed,
        }
    }
}

impl From<FlatSampling> for SamplingConfig {
    fn from(f: FlatSampling) -> Self {
        let mode = if f.greedy {
            Sampling::Greedy
        } else {
            Sampling::Sample {
                temperature: f.temperature,
                top_k: f.top_k,
                top_p: f.top_p,
            }
        };
        Self {
            mode,
            repetition_penalty: f.repetition_penalty,
            seed: f.seed,
        }
    }
}

/// Choose the next token from float32 `logits` `[V]`. `history` is every id so far (prompt and
/// generated: Hugging Face penalises both); `banned` ids get `-inf` (minimum length, suppressed tags).
pub fn select(logits: &Tensor, history: &[i64], banned: &[i64], cfg: &SamplingConfig) -> i64 {
    let mut scores = logits.to_kind(Kind::Float).view([1, -1]);
    let device = scores.device();
    if cfg.repetition_penalty != 1.0 && !history.is_empty() {
        let mut mask = Tensor::zeros_like(&scores).to_kind(Kind::Bool);
        let idx = Tensor::from_slice(history).to_device(device).view([1, -1]);
        mask = mask.scatter_value(1, &idx, 1);
        let p = cfg.repetition_penalty;
        // tch's `a.where_self(cond, b)` is torch.where(cond, a, b)
        let penalised = (&scores * p).where_self(&scores.lt(0.0), &(&scores / p));
        scores = penalised.where_self(&mask, &scores);
    }
    if !banned.is_empty() {
        let idx = Tensor::from_slice(banned).to_device(device).view([1, -1]);
        scores = scores.scatter_value(1, &idx, f64::NEG_INFINITY);
    }
    match cfg.mode {
        Sampling::Greedy => scores.argmax(-1, false).int64_value(&[0]),
        Sampling::Sample {
            temperature,
            top_k,
            top_p,
        } => draw(scores, temperature, top_k, top_p),
    }
}

/// Temperature, top-k, top-p, then one multinomial draw from `scores` `[1, V]`.
fn draw(mut scores: Tensor, temperature: f64, top_k: usize, top_p: f64) -> i64 {
    if temperature != 1.0 {
        scores = scores / temperature;
    }
    let vocab = scores.size()[1] as usize;
    if top_k > 0 {
        let k = top_k.min(vocab) as i64;
        let (top, _) = scores.topk(k, -1, true, true);
        let kth = top.narrow(-1, k - 1, 1);
        scores = scores.masked_fill(&scores.lt_tensor(&kth), f64::NEG_INFINITY);
    }
    if top_p < 1.0 {
        let (sorted, sorted_idx) = scores.sort(-1, false);
        let cum = sorted.softmax(-1, None::<Kind>).cumsum(-1, None::<Kind>);
        let remove_sorted = cum.le(1.0 - top_p);
        let _ = remove_sorted.narrow(-1, vocab as i64 - 1, 1).fill_(0);
        let remove = remove_sorted.scatter(1, &sorted_idx, &remove_sorted);
        scores = scores.masked_fill(&remove, f64::NEG_INFINITY);
    }
    let probs = scores.softmax(-1, None::<Kind>);
    probs.multinomial(1, false).int64_value(&[0, 0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_form_is_flat_and_round_trips() {
        let greedy = SamplingConfig {
            seed: Some(5),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&greedy).unwrap(),
            r#"{"greedy":true,"temperature":1.0,"top_p":1.0,"top_k":0,"repetition_penalty":1.0,"seed":5}"#
        );
        let sampled = SamplingConfig {
            mode: Sampling::Sample {
                temperature: 0.8,
                top_k: 20,
                top_p: 0.9,
            },
            repetition_penalty: 1.1,
            seed: None,
        };
        let text = serde_json::to_string(&sampled).unwrap();
        assert_eq!(
            text,
            r#"{"greedy":false,"temperature":0.8,"top_p":0.9,"top_k":20,"repetition_penalty":1.1,"seed":null}"#
        );
        let back: SamplingConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, sampled);
    }

    #[test]
    fn settings_are_named_by_field() {
        let bad = SamplingConfig {
            mode: Sampling::Sample {
                temperature: 1.0,
                top_k: 0,
                top_p: 1.5,
            },
            ..Default::default()
        };
        let e = bad.validate().unwrap_err();
        let e = e.downcast_ref::<crate::error::InvalidSetting>().unwrap();
        assert_eq!(
            (e.setting, e.reason.as_str()),
            ("top_p", "must be in (0, 1] (got 1.5)")
        );
    }
}
