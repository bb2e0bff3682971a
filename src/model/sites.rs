//! Named capture sites and the one observer interface over them. The model reports a value at a
//! site only when the attached [`Observer`] wants that site, and asks before computing anything
//! for it: with no observer attached a forward pass does no extra work.
//!
//! Sites are named TransformerLens-style (`blocks.{l}.attn.pattern`); [`SitePattern`] selects
//! them with globs (`blocks.*.attn.pattern`, `blocks.3-5.resid_post_attn`, `vision.*`).
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

/// A place in the forward pass where a value can be observed. Decoder sites carry the batch
/// axis first; vision sites describe all images of the forward together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Site {
    /// `embed`: the decoder's input embeddings with the image features scattered in,
    /// `[b, positions, hidden]`.
    Embed,
    /// `blocks.{l}.attn.pattern`: layer `l`'s attention, reported as [`AttentionInputs`] (the
    /// query, the key cache and the scale, and the probabilities when the model computed them).
    AttnPattern(usize),
    /// `blocks.{l}.resid_post_attn`: the residual stream right after layer `l`'s attention block
    /// (steering already added), `[b, positions, hidden]`.
    ResidPostAttn(usize),
    /// `blocks.{l}.mlp.router`: layer `l`'s expert-router probabilities (softmax over the
    /// experts, before the top-k choice), float32 `[b, positions, experts]`; only MoE layers
    /// (Qwen3-VL-MoE) report it.
    MlpRouter(usize),
    /// `blocks.{l}.resid_post`: layer `l`'s output, `[b, positions, hidden]`.
    ResidPost(usize),
    /// `ln_final`: the final norm's output, what the output head reads, `[b, positions, hidden]`.
    LnFinal,
    /// `vision.blocks.{b}.attn_received`: the head-mean attention each patch receives from the
    /// queries of its window (or of the whole image in full-attention blocks), averaged over those
    /// queries, float32 `[patches]` in the processor's patch order (2x2 merge blocks).
    VisionAttnReceived(usize),
    /// `vision.merged`: the vision tower's output, one row per image token, `[tokens, hidden]`.
    VisionMerged,
}

/// Marks the index segment in a site's name template.
const INDEX: &str = "#";

/// One site of each kind (index 0), in the order of the forward pass.
const KINDS: [Site; 8] = [
    Site::VisionAttnReceived(0),
    Site::VisionMerged,
    Site::Embed,
    Site::AttnPattern(0),
    Site::ResidPostAttn(0),
    Site::MlpRouter(0),
    Site::ResidPost(0),
    Site::LnFinal,
];

impl Site {
    /// The name's segments, with [`INDEX`] where the layer or block goes.
    fn template(self) -> &'static [&'static str] {
        match self {
            Site::Embed => &["embed"],
            Site::AttnPattern(_) => &["blocks", INDEX, "attn", "pattern"],
            Site::ResidPostAttn(_) => &["blocks", INDEX, "resid_post_attn"],
            Site::MlpRouter(_) => &["blocks", INDEX, "mlp", "router"],
            Site::ResidPost(_) => &["blocks", INDEX, "resid_post"],
            Site::LnFinal => &["ln_final"],
            Site::VisionAttnReceived(_) => &["vision", "blocks", INDEX, "attn_received"],
            Site::VisionMerged => &["vision", "merged"],
        }
    }

    /// The decoder layer or vision block, for sites that have one.
    pub fn index(self) -> Option<usize> {
        match self {
            Site::AttnPattern(i)
            | Site::ResidPostAttn(i)
            | Site::MlpRouter(i)
            | Site::ResidPost(i)
            | Site::VisionAttnReceived(i) => Some(i),
            Site::Embed | Site::LnFinal | Site::VisionMerged => None,
        }
    }

    /// The same kind of site at another layer or block.
    fn at(self, i: usize) -> Site {
        match self {
            Site::AttnPattern(_) => Site::AttnPattern(i),
            Site::ResidPostAttn(_) => Site::ResidPostAttn(i),
            Site::MlpRouter(_) => Site::MlpRouter(i),
            Site::ResidPost(_) => Site::ResidPost(i),
            Site::VisionAttnReceived(_) => Site::VisionAttnReceived(i),
            other => other,
        }
    }

    /// Whether the site belongs to the vision tower (its values have no batch axis).
    pub fn is_vision(self) -> bool {
        self.template()[0] == "vision"
    }

    /// Every site of a model with `layers` decoder layers and `blocks` vision blocks, kind by kind
    /// in the order of the forward pass.
    pub fn all(layers: usize, blocks: usize) -> Vec<Site> {
        let mut out = Vec::new();
        for kind in KINDS {
            match kind.index() {
                None => out.push(kind),
                Some(_) => {
                    let n = if kind.is_vision() { blocks } else { layers };
                    out.extend((0..n).map(|i| kind.at(i)));
                }
            }
        }
        out
    }

    /// The name templates of every kind of site (`blocks.{l}.attn.pattern`, ...).
    pub fn name_templates() -> Vec<String> {
        KINDS
            .iter()
            .map(|k| {
                let letter = if k.is_vision() { "{b}" } else { "{l}" };
                k.template().join(".").replace(INDEX, letter)
            })
            .collect()
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.template().iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            match (*seg, self.index()) {
                (INDEX, Some(n)) => write!(f, "{n}")?,
                _ => f.write_str(seg)?,
            }
        }
        Ok(())
    }
}

/// A site name or pattern that does not name any capture site.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{given}` {reason} (sites: {})", Site::name_templates().join(", "))]
pub struct SiteError {
    pub given: String,
    pub reason: &'static str,
}

impl SiteError {
    fn new(given: &str, reason: &'static str) -> Self {
        Self {
            given: given.to_string(),
            reason,
        }
    }
}

impl FromStr for Site {
    type Err = SiteError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('.').collect();
        for kind in KINDS {
            let t = kind.template();
            if t.len() != parts.len() {
                continue;
            }
            let mut index = None;
            let fits = t.iter().zip(&parts).all(|(seg, part)| match *seg {
                INDEX => {
                    index = part.parse::<usize>().ok();
                    index.is_some()
                }
                _ => seg == part,
            });
            if fits {
                return Ok(index.map_or(kind, |i| kind.at(i)));
            }
        }
        Err(SiteError::new(s, "is not a capture site"))
    }
}

/// One segment of a [`SitePattern`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum PatternSegment {
    /// `*`: any one segment; as the last segment, any rest of the name
    Any,
    /// an index range, inclusive: `3` or `3-5`
    Range(usize, usize),
    Word(String),
}

/// Selects sites by name: the site name's segments, where `*` stands for any one segment (as the
/// last segment, for the whole rest of the name) and an index may be a range `3-5` (inclusive).
/// `blocks.*.attn.pattern`, `blocks.3-5.resid_post_attn`, `vision.*`, `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SitePattern {
    text: String,
    segments: Vec<PatternSegment>,
}

impl SitePattern {
    /// Whether the pattern selects `site`.
    pub fn matches(&self, site: Site) -> bool {
        self.fits(site.template(), site.index())
    }

    /// Matches against a name template; `index: None` stands for any index.
    fn fits(&self, template: &[&str], index: Option<usize>) -> bool {
        let trailing_any = self.segments.last() == Some(&PatternSegment::Any);
        let fixed = self.segments.len() - usize::from(trailing_any);
        let len_ok = if trailing_any {
            template.len() > fixed
        } else {
            template.len() == fixed
        };
        len_ok
            && self.segments[..fixed]
                .iter()
                .zip(template)
                .all(|(p, seg)| match (p, *seg) {
                    (PatternSegment::Any, _) => true,
                    (PatternSegment::Range(a, b), INDEX) => {
                        index.is_none_or(|i| *a <= i && i <= *b)
                    }
                    (PatternSegment::Word(w), seg) => seg != INDEX && w == seg,
                    (PatternSegment::Range(..), _) => false,
                })
    }
}

impl fmt::Display for SitePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for SitePattern {
    type Err = SiteError;

    /// Parses a pattern; one that can select no kind of site (a misspelt name) is refused.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let mut segments = Vec::new();
        for part in s.split('.') {
            segments.push(
                parse_segment(part).ok_or_else(|| {
                    SiteError::new(s, "has an empty segment or a backwards range")
                })?,
            );
        }
        let pattern = SitePattern {
            text: s.to_string(),
            segments,
        };
        if !KINDS.iter().any(|k| pattern.fits(k.template(), None)) {
            return Err(SiteError::new(s, "selects no capture site"));
        }
        Ok(pattern)
    }
}

fn parse_segment(part: &str) -> Option<PatternSegment> {
    if part.is_empty() {
        return None;
    }
    if part == "*" {
        return Some(PatternSegment::Any);
    }
    if part.starts_with(|c: char| c.is_ascii_digit()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b) = (a.parse().ok()?, b.parse().ok()?);
        return (a <= b).then_some(PatternSegment::Range(a, b));
    }
    Some(PatternSegment::Word(part.to_string()))
}

/// What a site yields.
pub enum Captured<'a> {
    /// `blocks.{l}.attn.pattern`
    Attention(AttentionInputs<'a>),
    /// every other site
    Tensor(&'a Tensor),
}

/// A decoder layer's attention, as the model computed it. libtorch's fused attention returns no
/// probabilities, so an observer gets the query and the full key cache and computes the rows it
/// needs; the query rows are the last `q_len` positions of the cache.
pub struct AttentionInputs<'a> {
    /// `[b, heads, q_len, head_dim]` after RoPE
    pub query: &'a Tensor,
    /// `[b, kv_heads, kv_len, head_dim]`: the whole cache including this forward's keys
    pub keys: &'a Tensor,
    /// the softmax scale
    pub scaling: f64,
    /// `[b, heads, q_len, kv_len]` in the model's dtype, when the model computed them itself (the
    /// eager path, or a single-token decode step), so an observer need not read the keys again
    pub probs: Option<&'a Tensor>,
    /// `[b, 1, q_len, kv_len]` true where a query may attend, for left-padded batches; `None`:
    /// causal, each query row sees the keys up to its own position
    pub mask: Option<&'a Tensor>,
}

impl AttentionInputs<'_> {
    /// The probabilities `[b, heads, q_len, kv_len]`: the model's own when it computed them, else
    /// computed here exactly as the model's eager path computes them.
    pub fn probs(&self) -> Tensor {
        match self.probs {
            Some(p) => p.shallow_clone(),
            None => eager_probs(self.query, self.keys, self.scaling, self.mask),
        }
    }
}

/// `softmax(q kᵀ · scale)` in float32, returned in the query's dtype: `q` `[b, heads, q, d]`,
/// `keys` `[b, kv_heads, kv, d]` (repeated over the query heads of each group), masked by `mask`
/// or else causally with the query rows at the end of the keys. What Hugging Face's eager
/// attention computes.
pub(crate) fn eager_probs(
    q: &Tensor,
    keys: &Tensor,
    scaling: f64,
    mask: Option<&Tensor>,
) -> Tensor {
    let groups = q.size()[1] / keys.size()[1];
    let kr = repeat_kv(keys, groups);
    let mut w = q.matmul(&kr.transpose(2, 3)) * scaling;
    let (n, kv) = (q.size()[2], keys.size()[2]);
    if let Some(m) = mask {
        w = w.masked_fill(&m.logical_not(), min_value(w.kind()));
    } else if n > 1 {
        let causal = causal_mask(n, kv, w.kind(), w.device());
        w = w + causal;
    }
    w.softmax(-1, Kind::Float).to_kind(q.kind())
}

/// `[b, kv_heads, L, d]` → `[b, kv_heads * groups, L, d]` (each kv head repeated `groups` times).
pub(crate) fn repeat_kv(x: &Tensor, groups: i64) -> Tensor {
    if groups == 1 {
        return x.shallow_clone();
    }
    let s = x.size();
    x.unsqueeze(2)
        .expand([s[0], s[1], groups, s[2], s[3]], false)
        .reshape([s[0], s[1] * groups, s[2], s[3]])
}

/// Additive causal mask `[n, kv]` for `n` query rows at the end of `kv` keys: 0 where a row may
/// attend, the dtype's minimum above its position.
fn causal_mask(n: i64, kv: i64, kind: Kind, device: tch::Device) -> Tensor {
    let min = min_value(kind);
    Tensor::ones([n, kv], (Kind::Bool, device))
        .triu(kv - n + 1)
        .to_kind(kind)
        * min
}

/// The dtype's most negative finite value (what masked scores get).
pub(crate) fn min_value(kind: Kind) -> f64 {
    match kind {
        Kind::BFloat16 => -3.3895313892515355e38,
        Kind::Half => -65504.0,
        Kind::Double => f64::MIN,
        _ => f32::MIN as f64,
    }
}

/// Sees the values of the sites it wants during a forward pass.
pub trait Observer {
    /// Whether `site` should be reported; asked before anything is computed for it.
    fn wants(&self, site: Site) -> bool;

    /// A wanted site's value. Tensors are the model's own: copy what is kept past the forward
    /// pass that reported it.
    fn on_capture(&mut self, site: Site, value: Captured<'_>);
}

/// Reborrow an optional observer for one call (coercions do not reach inside `Option`).
pub fn reborrow<'s>(o: &'s mut Option<&mut dyn Observer>) -> Option<&'s mut dyn Observer> {
    match o {
        Some(x) => Some(&mut **x),
        None => None,
    }
}

/// Report `value` at `site` if the observer wants it.
pub(crate) fn report(observer: &mut Option<&mut dyn Observer>, site: Site, value: &Tensor) {
    if let Some(obs) = reborrow(observer) {
        if obs.wants(site) {
            obs.on_capture(site, Captured::Tensor(value));
        }
    }
}

/// Keeps the value of every site its patterns select (the last value, when several forward passes
/// report the same site): attention patterns as probabilities, other sites as reported.
pub struct Collector {
    patterns: Vec<SitePattern>,
    values: BTreeMap<Site, Tensor>,
}

impl Collector {
    pub fn new(patterns: Vec<SitePattern>) -> Self {
        Self {
            patterns,
            values: BTreeMap::new(),
        }
    }

    /// Collects what [`Collector::hugging_face_outputs`] needs.
    pub fn hugging_face() -> Self {
        let patterns = [
            "embed",
            "blocks.*.attn.pattern",
            "blocks.*.resid_post",
            "ln_final",
            "vision.merged",
        ];
        Self::new(
            patterns
                .iter()
                .map(|p| p.parse().expect("the names above are site patterns"))
                .collect(),
        )
    }

    pub fn get(&self, site: Site) -> Option<&Tensor> {
        self.values.get(&site)
    }

    /// Every collected value, in site order.
    pub fn into_values(self) -> BTreeMap<Site, Tensor> {
        self.values
    }

    /// A prefill's collected values laid out as Hugging Face returns them.
    pub fn hugging_face_outputs(&self, layers: usize) -> Result<HuggingFaceOutputs> {
        let get = |site: Site| match self.get(site) {
            Some(t) => Ok(t.shallow_clone()),
            None => bail!("site {site} was not captured"),
        };
        let probs = (0..layers)
            .map(|l| get(Site::AttnPattern(l)))
            .collect::<Result<Vec<_>>>()?;
        // Hugging Face reports the final norm's output in place of the last layer's output
        let mut hidden = vec![get(Site::Embed)?];
        for l in 0..layers.saturating_sub(1) {
            hidden.push(get(Site::ResidPost(l))?);
        }
        hidden.push(get(Site::LnFinal)?);
        Ok(HuggingFaceOutputs {
            probs,
            hidden: hidden.iter().map(|h| h.squeeze_dim(0)).collect(),
            image_embeds: self.get(Site::VisionMerged).map(Tensor::shallow_clone),
        })
    }
}

impl Observer for Collector {
    fn wants(&self, site: Site) -> bool {
        self.patterns.iter().any(|p| p.matches(site))
    }

    fn on_capture(&mut self, site: Site, value: Captured<'_>) {
        // the model never writes into a reported tensor afterwards (only into the key cache,
        // which is kept as probabilities), so a shallow handle is enough
        let t = match value {
            Captured::Attention(a) => a.probs(),
            Captured::Tensor(t) => t.shallow_clone(),
        };
        self.values.insert(site, t);
    }
}

/// A prefill's outputs as Hugging Face returns them with `output_attentions` and
/// `output_hidden_states`, and the image features.
pub struct HuggingFaceOutputs {
    /// `attentions`: per layer `[1, heads, positions, positions]`
    pub probs: Vec<Tensor>,
    /// `hidden_states`: the embeddings, each layer's output and, in place of the last layer's
    /// output, the final norm's: `[positions, hidden]` each
    pub hidden: Vec<Tensor>,
    /// `image_embeds` `[image tokens, hidden]`, when the prompt has images
    pub image_embeds: Option<Tensor>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for site in Site::all(3, 2) {
            assert_eq!(site.to_string().parse::<Site>(), Ok(site));
        }
        assert_eq!(Site::AttnPattern(4).to_string(), "blocks.4.attn.pattern");
        assert_eq!(
            Site::VisionAttnReceived(1).to_string(),
            "vision.blocks.1.attn_received"
        );
        assert!("blocks.x.attn.pattern".parse::<Site>().is_err());
        assert!("blocks.1.attn".parse::<Site>().is_err());
    }

    #[test]
    fn patterns_select_sites() {
        let sel = |p: &str| -> Vec<String> {
            let p: SitePattern = p.parse().unwrap();
            Site::all(4, 2)
                .into_iter()
                .filter(|s| p.matches(*s))
                .map(|s| s.to_string())
                .collect()
        };
        assert_eq!(
            sel("blocks.*.attn.pattern"),
            (0..4)
                .map(|l| format!("blocks.{l}.attn.pattern"))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            sel("blocks.1-2.resid_post_attn"),
            ["blocks.1.resid_post_attn", "blocks.2.resid_post_attn"]
        );
        // attn.pattern, resid_post_attn, mlp.router, resid_post
        assert_eq!(sel("blocks.3.*").len(), 4);
        assert_eq!(sel("vision.*").len(), 3);
        assert_eq!(sel("*").len(), Site::all(4, 2).len());
        assert_eq!(sel("embed"), ["embed"]);
        assert!(sel("blocks.7.resid_post").is_empty());
    }

    #[test]
    fn misspelt_patterns_are_refused() {
        for bad in [
            "blocks.*.attn.patern",
            "blocks.3-1.resid_post",
            "blocks..resid_post",
            "vision.blocks.*.pattern",
            "embed.*",
            "",
        ] {
            let e = bad.parse::<SitePattern>().unwrap_err();
            assert!(e.to_string().contains("blocks.{l}.attn.pattern"), "{e}");
        }
    }
}
