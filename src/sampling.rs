//! Token selection, with Hugging Face's logits processors in Hugging Face's order: repetition
//! penalty, minimum new tokens (end-of-sequence suppressed), temperature, top-k, top-p, then
//! softmax + multinomial (or argmax when greedy). Same ops, so a seeded run draws the same tokens.
use tch::{Kind, Tensor};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SamplingConfig {
    /// argmax instead of sampling
    pub greedy: bool,
    pub temperature: f64,
    pub top_p: f64,
    /// 0 disables top-k
    pub top_k: usize,
    pub repetition_penalty: f64,
    pub seed: Option<u64>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            greedy: true,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            repetition_penalty: 1.0,
            seed: None,
        }
    }
}

impl SamplingConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(self.temperature > 0.0) || !self.temperature.is_finite() {
            anyhow::bail!(
                "--temperature must be a positive number (got {})",
                self.temperature
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            anyhow::bail!("--top-p must be in (0, 1] (got {})", self.top_p);
        }
        if !(self.repetition_penalty > 0.0) || !self.repetition_penalty.is_finite() {
            anyhow::bail!(
                "--repetition-penalty must be a positive number (got {})",
                self.repetition_penalty
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
    if cfg.greedy {
        return scores.argmax(-1, false).int64_value(&[0]);
    }
    if cfg.temperature != 1.0 {
        scores = scores / cfg.temperature;
    }
    let vocab = scores.size()[1] as usize;
    if cfg.top_k > 0 {
        let k = cfg.top_k.min(vocab) as i64;
        let (top, _) = scores.topk(k, -1, true, true);
        let kth = top.narrow(-1, k - 1, 1);
        scores = scores.masked_fill(&scores.lt_tensor(&kth), f64::NEG_INFINITY);
    }
    if cfg.top_p < 1.0 {
        let (sorted, sorted_idx) = scores.sort(-1, false);
        let cum = sorted.softmax(-1, None::<Kind>).cumsum(-1, None::<Kind>);
        let remove_sorted = cum.le(1.0 - cfg.top_p);
        let _ = remove_sorted.narrow(-1, vocab as i64 - 1, 1).fill_(0);
        let remove = remove_sorted.scatter(1, &sorted_idx, &remove_sorted);
        scores = scores.masked_fill(&remove, f64::NEG_INFINITY);
    }
    let probs = scores.softmax(-1, None::<Kind>);
    probs.multinomial(1, false).int64_value(&[0, 0])
}
