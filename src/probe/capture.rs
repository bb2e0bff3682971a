//! The attention probe: computes, for the query rows that produce generated tokens, the attention
//! probabilities from the same queries and cached keys the model used, and reduces them at once to
//! per-role mass and per-image-token maps. Everything stays on the model's device in preallocated
//! buffers (no host synchronisation per layer); memory grows by O(layers × roles) per step.
use std::collections::VecDeque;

use tch::{Device, Kind, Tensor};

use crate::formats::{Role, ROLE_NAMES};
use crate::generate::StepObserver;
use crate::model::{AttentionInputs, Captured, Observer, Site};

/// What to capture.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// decoder layers to capture (sorted, unique); all when empty
    pub layers: Vec<usize>,
    /// keep per-head role mass
    pub per_head: bool,
    /// visual maps per window of this many steps
    pub window: Option<usize>,
    /// compute probabilities in float32 even when the model runs in half precision
    pub f32_probs: bool,
    /// keep per-head visual maps (averaged over steps)
    pub visual_heads: bool,
    /// keep every step's head-mean visual map (`visual_attention_steps`, saved as float16)
    pub step_maps: bool,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            layers: Vec::new(),
            per_head: false,
            window: None,
            f32_probs: false,
            visual_heads: false,
            step_maps: true,
        }
    }
}

/// Results on the CPU, float32, row-major.
#[derive(Debug, Clone)]
pub struct ProbeArrays {
    pub steps: usize,
    pub layers: Vec<usize>,
    pub heads: usize,
    /// `[steps, layers, roles]`
    pub role_attention: Vec<f32>,
    /// `[steps, layers, heads, roles]`
    pub role_attention_heads: Option<Vec<f32>>,
    /// `[layers, visual_tokens]`, mean over steps
    pub visual_attention: Vec<f32>,
    /// `[layers, heads, visual_tokens]`, mean over steps
    pub visual_attention_heads: Option<Vec<f32>>,
    /// `[windows, layers, visual_tokens]`, mean over the steps of each window
    pub visual_attention_windows: Option<Vec<f32>>,
    /// `[steps, layers, visual_tokens]`, head-mean map of every step (float16 values)
    pub visual_attention_steps: Option<Vec<f32>>,
    pub visual_tokens: usize,
    /// `[blocks, patches]`
    pub vision_attention: Option<Vec<f32>>,
}

pub struct Probe {
    cfg: ProbeConfig,
    device: Device,
    prompt_len: usize,
    heads: i64,
    kv_heads: i64,
    /// layer index → position in `cfg.layers`
    slot: Vec<Option<usize>>,
    visual: (i64, i64),
    /// `[capacity, roles]` one-hot role of every key position
    onehot: Tensor,
    /// `[max_steps, layers, heads, roles]` head-resolved role mass
    role_buf: Tensor,
    /// `[layers, heads, visual]` running sum over steps
    vis_sum: Tensor,
    vis_windows: Option<Tensor>,
    /// this step's visual rows `[layers, heads, visual]`, added to the sums when the step completes
    vis_step: Tensor,
    /// `[capacity, layers, visual]` float16 head-mean map of every step, grown by doubling
    vis_steps: Option<Tensor>,
    recent: VecDeque<(usize, Tensor)>,
    steps: usize,
    max_steps: usize,
    answer_from: Option<usize>,
    /// the vision tower's attention, when asked for
    vision: Option<VisionProbe>,
}

/// Captures the vision tower's attention: per block, what each patch receives.
pub struct VisionProbe {
    grid: [i64; 3],
    merge: i64,
    blocks: Vec<Option<Tensor>>,
}

impl VisionProbe {
    pub fn new(grid_thw: [i64; 3], merge: i64, blocks: usize) -> Self {
        Self {
            grid: grid_thw,
            merge,
            blocks: (0..blocks).map(|_| None).collect(),
        }
    }

    /// `[blocks, patches]` row-major, raster order of the patch grid.
    pub fn rows(&self) -> Vec<f32> {
        let n = (self.grid[0] * self.grid[1] * self.grid[2]) as usize;
        let mut out = Vec::with_capacity(n * self.blocks.len());
        for b in &self.blocks {
            match b {
                Some(t) => out.extend(to_vec(&block_to_raster(t, self.grid, self.merge))),
                None => out.extend(std::iter::repeat(0f32).take(n)),
            }
        }
        out
    }
}

fn to_vec(t: &Tensor) -> Vec<f32> {
    let t = t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
    let n = t.numel();
    let mut v = vec![0f32; n];
    t.copy_data(&mut v, n);
    v
}

const RECENT: usize = 64;
/// Steps the per-step map buffer holds at first; it doubles when full (a long budget does not
/// reserve device memory for steps it never reaches).
const STEP_MAPS_FIRST: usize = 256;

impl Probe {
    /// `roles`: role of each prompt position; `max_steps`: most generated tokens to expect.
    pub fn new(
        cfg: ProbeConfig,
        num_layers: usize,
        heads: usize,
        kv_heads: usize,
        prompt_roles: &[Role],
        visual: (usize, usize),
        max_steps: usize,
        device: Device,
    ) -> anyhow::Result<Self> {
        let mut cfg = cfg;
        if cfg.layers.is_empty() {
            cfg.layers = (0..num_layers).collect();
        }
        cfg.layers.sort_unstable();
        cfg.layers.dedup();
        if let Some(&bad) = cfg.layers.iter().find(|&&l| l >= num_layers) {
            anyhow::bail!(
                "layer {bad} does not exist: the model has {num_layers} decoder layers (0..{})",
                num_layers - 1
            );
        }
        if cfg.window == Some(0) {
            return crate::error::invalid("window", "must be at least 1 step");
        }
        let mut slot = vec![None; num_layers];
        for (i, &l) in cfg.layers.iter().enumerate() {
            slot[l] = Some(i);
        }
        let nl = cfg.layers.len() as i64;
        let h = heads as i64;
        // keep the head axis only when asked for: otherwise reduce over heads at once
        let role_heads = if cfg.per_head { h } else { 1 };
        let vis_heads = if cfg.visual_heads { h } else { 1 };
        let roles = ROLE_NAMES.len() as i64;
        let cap = (prompt_roles.len() + max_steps + 1) as i64;
        let mut roles_idx: Vec<i64> = prompt_roles.iter().map(|r| *r as i64).collect();
        roles_idx.resize(cap as usize, Role::Reasoning as i64);
        let onehot = Tensor::from_slice(&roles_idx)
            .one_hot(roles)
            .to_kind(Kind::Float)
            .to_device(device);
        let nvis = (visual.1 - visual.0) as i64;
        let opts = (Kind::Float, device);
        let vis_windows = cfg.window.map(|w| {
            let n = max_steps.div_ceil(w).max(1) as i64;
            Tensor::zeros([n, nl, vis_heads, nvis], opts)
        });
        Ok(Self {
            device,
            prompt_len: prompt_roles.len(),
            heads: h,
            kv_heads: kv_heads as i64,
            slot,
            visual: (visual.0 as i64, visual.1 as i64),
            onehot,
            role_buf: Tensor::zeros([max_steps.max(1) as i64, nl, role_heads, roles], opts),
            vis_sum: Tensor::zeros([nl, vis_heads, nvis], opts),
            vis_windows,
            vis_step: Tensor::zeros([nl, vis_heads, nvis], opts),
            vis_steps: (cfg.step_maps && nvis > 0).then(|| {
                let first = max_steps.clamp(1, STEP_MAPS_FIRST) as i64;
                Tensor::zeros([first, nl, nvis], (Kind::Half, device))
            }),
            recent: VecDeque::new(),
            steps: 0,
            max_steps: max_steps.max(1),
            answer_from: None,
            vision: None,
            cfg,
        })
    }

    /// Also capture the vision tower's attention (reported in [`ProbeArrays::vision_attention`]).
    pub fn with_vision(mut self, vision: VisionProbe) -> Self {
        self.vision = Some(vision);
        self
    }

    /// Generated tokens from `index` on are the answer (the thinking block closed before it).
    pub fn set_answer_start(&mut self, index: usize) {
        if self.answer_from == Some(index) {
            return;
        }
        let from = (self.prompt_len + index) as i64;
        let cap = self.onehot.size()[0];
        if from < cap {
            let mut rows = self.onehot.narrow(0, from, cap - from);
            let _ = rows.fill_(0.0);
            let _ = rows.narrow(1, Role::Answer as i64, 1).fill_(1.0);
        }
        self.answer_from = Some(index);
    }

    pub fn steps(&self) -> usize {
        self.steps
    }

    fn layer_row(&mut self, layer: usize, attn: &AttentionInputs<'_>) {
        let Some(li) = self.slot[layer] else { return };
        let (query, keys, scaling) = (attn.query, attn.keys, attn.scaling);
        // the model's probabilities serve when they are the one row of a decode step
        let model_probs = attn.probs.filter(|p| p.size()[2] == 1);
        let q_len = query.size()[2];
        let kv_len = keys.size()[2];
        let step = (kv_len - self.prompt_len as i64) as usize;
        if step >= self.max_steps {
            return;
        }
        let probs = match model_probs {
            // the model's own decode probabilities (as the reference eager path returns them)
            Some(p) if !self.cfg.f32_probs => p.to_kind(Kind::Float).reshape([self.heads, kv_len]),
            _ => {
                // the query row at the newest position: [1, H, 1, D] → [kv_heads, groups, D]
                let q = query.narrow(2, q_len - 1, 1);
                let d = q.size()[3];
                let groups = self.heads / self.kv_heads;
                let (q, k) = if self.cfg.f32_probs {
                    (q.to_kind(Kind::Float), keys.to_kind(Kind::Float))
                } else {
                    (q, keys.shallow_clone())
                };
                let q = q.reshape([self.kv_heads, groups, d]);
                let k = k.squeeze_dim(0);
                // [kv_heads, groups, kv] → [H, kv], softmax in float32 like the reference eager path
                let scores = q.matmul(&k.transpose(1, 2)) * scaling;
                scores
                    .softmax(-1, Kind::Float)
                    .to_kind(if self.cfg.f32_probs {
                        Kind::Float
                    } else {
                        query.kind()
                    })
                    .to_kind(Kind::Float)
                    .reshape([self.heads, kv_len])
            }
        };
        let head_mean = probs.mean_dim([0i64].as_slice(), true, None::<Kind>);
        let rows = if self.cfg.per_head {
            &probs
        } else {
            &head_mean
        };
        let mass = rows.matmul(&self.onehot.narrow(0, 0, kv_len));
        let _ = self.role_buf.get(step as i64).get(li as i64).copy_(&mass);
        let (v0, v1) = self.visual;
        if v1 > v0 {
            let rows = if self.cfg.visual_heads {
                &probs
            } else {
                &head_mean
            };
            let _ = self
                .vis_step
                .get(li as i64)
                .copy_(&rows.narrow(1, v0, v1 - v0));
        }
        if li + 1 == self.cfg.layers.len() {
            self.finish_step(step);
        }
    }

    fn finish_step(&mut self, step: usize) {
        let _ = self.vis_sum.g_add_(&self.vis_step);
        if let (Some(w), Some(win)) = (self.cfg.window, self.vis_windows.as_mut()) {
            let _ = win.get((step / w) as i64).g_add_(&self.vis_step);
        }
        self.keep_step_map(step);
        self.recent.push_back((step, self.vis_step.copy()));
        if self.recent.len() > RECENT {
            self.recent.pop_front();
        }
        self.steps = self.steps.max(step + 1);
    }

    /// Writes this step's head-mean map into the per-step buffer (on the device: no host sync).
    fn keep_step_map(&mut self, step: usize) {
        let Some(buf) = self.vis_steps.as_mut() else {
            return;
        };
        let cap = buf.size()[0];
        if step as i64 >= cap {
            let grown = (cap * 2).max(step as i64 + 1).min(self.max_steps as i64);
            let mut size = buf.size();
            size[0] = grown;
            let bigger = Tensor::zeros(size.as_slice(), (buf.kind(), buf.device()));
            let _ = bigger.narrow(0, 0, cap).copy_(buf);
            *buf = bigger;
        }
        let map = self
            .vis_step
            .mean_dim([1i64].as_slice(), false, None::<Kind>);
        let _ = buf.get(step as i64).copy_(&map);
    }

    /// Copy results to the CPU.
    pub fn arrays(&self) -> ProbeArrays {
        let steps = self.steps;
        let nl = self.cfg.layers.len();
        let h = self.heads as usize;
        let heads_buf = self.role_buf.narrow(0, 0, steps.max(1) as i64);
        let heads_buf = if steps == 0 {
            heads_buf.narrow(0, 0, 0)
        } else {
            heads_buf
        };
        let role = heads_buf.mean_dim([2i64].as_slice(), false, None::<Kind>);
        let denom = steps.max(1) as f64;
        let vis_heads = &self.vis_sum / denom;
        let windows = self
            .vis_windows
            .as_ref()
            .zip(self.cfg.window)
            .map(|(t, w)| {
                // mean over the steps actually in each window
                let n = steps.div_ceil(w);
                let counts: Vec<f32> = (0..n)
                    .map(|i| (steps.min((i + 1) * w) - i * w) as f32)
                    .collect();
                let c = Tensor::from_slice(&counts)
                    .to_device(self.device)
                    .view([n as i64, 1, 1, 1]);
                let t = t.narrow(0, 0, n as i64) / c;
                to_vec(&t.mean_dim([2i64].as_slice(), false, None::<Kind>))
            });
        ProbeArrays {
            steps,
            layers: self.cfg.layers.clone(),
            heads: h,
            role_attention: to_vec(&role),
            role_attention_heads: self.cfg.per_head.then(|| to_vec(&heads_buf)),
            visual_attention: to_vec(&vis_heads.mean_dim([1i64].as_slice(), false, None::<Kind>)),
            visual_attention_heads: self.cfg.visual_heads.then(|| to_vec(&vis_heads)),
            visual_attention_windows: windows,
            visual_attention_steps: self
                .vis_steps
                .as_ref()
                .map(|t| to_vec(&t.narrow(0, 0, steps as i64))),
            visual_tokens: (self.visual.1 - self.visual.0) as usize,
            vision_attention: self.vision.as_ref().map(VisionProbe::rows),
        }
        .check(nl)
    }
}

impl ProbeArrays {
    fn check(self, nl: usize) -> Self {
        debug_assert_eq!(
            self.role_attention.len(),
            self.steps * nl * ROLE_NAMES.len()
        );
        self
    }
}

/// Processor patch order (2x2 merge blocks) → raster order of the patch grid.
fn block_to_raster(t: &Tensor, grid: [i64; 3], merge: i64) -> Tensor {
    let [gt, gh, gw] = grid;
    t.view([gt, gh / merge, gw / merge, merge, merge])
        .permute([0, 1, 3, 2, 4])
        .reshape([gt * gh * gw])
}

impl Observer for Probe {
    fn wants(&self, site: Site) -> bool {
        match site {
            Site::AttnPattern(layer) => self.slot.get(layer).copied().flatten().is_some(),
            _ => self.vision.as_ref().is_some_and(|v| v.wants(site)),
        }
    }

    fn on_capture(&mut self, site: Site, value: Captured<'_>) {
        match (site, value) {
            (Site::AttnPattern(layer), Captured::Attention(attn)) => self.layer_row(layer, &attn),
            (_, value) => {
                if let Some(v) = self.vision.as_mut() {
                    v.on_capture(site, value);
                }
            }
        }
    }
}

impl StepObserver for Probe {
    fn rollback(&mut self, steps: usize) {
        // undo the visual sums of the dropped steps (role rows and step maps are simply overwritten
        // later, and only the first `steps` rows are ever read)
        while let Some((s, _)) = self.recent.back() {
            if *s < steps {
                break;
            }
            let (s, t) = self.recent.pop_back().expect("checked non-empty");
            let _ = self.vis_sum.g_sub_(&t);
            if let (Some(w), Some(win)) = (self.cfg.window, self.vis_windows.as_mut()) {
                let _ = win.get((s / w) as i64).g_sub_(&t);
            }
        }
        self.steps = self.steps.min(steps);
    }

    fn set_answer_start(&mut self, index: usize) {
        Probe::set_answer_start(self, index);
    }
}

impl Observer for VisionProbe {
    fn wants(&self, site: Site) -> bool {
        matches!(site, Site::VisionAttnReceived(block) if block < self.blocks.len())
    }

    fn on_capture(&mut self, site: Site, value: Captured<'_>) {
        if let (Site::VisionAttnReceived(block), Captured::Tensor(received)) = (site, value) {
            self.blocks[block] = Some(received.to_kind(Kind::Float).copy());
        }
    }
}
