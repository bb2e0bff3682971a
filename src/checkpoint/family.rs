//! The one table of model families: what a checkpoint's `model_type` is made of (vision tower,
//! decoder flavour, rotary layout, processor defaults, template habits). Config parsing reads its
//! defaults from here and the model builds its parts from here; everything above the model layer
//! is family-agnostic and sees only the geometry (patch size × merge size) the config carries.
use serde::Serialize;

/// How the vision tower is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VisionKind {
    /// Qwen2-VL: LayerNorm blocks, `fc1 → act → fc2` MLP, full attention per frame, LayerNorm
    /// merger.
    Qwen2,
    /// Qwen2.5-VL: RMSNorm blocks, SwiGLU MLP, window attention with a few full-attention
    /// blocks, RMSNorm merger.
    Qwen2_5,
    /// Qwen3-VL: learned position embedding interpolated to the grid plus 2-D rotary, LayerNorm
    /// blocks, `fc1 → act → fc2` MLP, full attention per frame, DeepStack mergers.
    Qwen3,
}

/// How a decoder layer's attention is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecoderKind {
    /// Qwen2: q/k/v projections with bias.
    Qwen2,
    /// Qwen3: no q/k/v bias, RMSNorm over each head of q and k before the rotary embedding.
    Qwen3,
}

/// How the 3-D (t, h, w) positions share out the rotary frequencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RopeLayout {
    /// Consecutive chunks (`mrope_section` t, then h, then w frequencies).
    Chunked,
    /// Frequencies cycle t, h, w, t, h, w ... within the first `3 × section` of each plane
    /// (`mrope_interleaved`).
    Interleaved,
}

/// One family's parts and defaults (the defaults are transformers 5.17's config classes).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Family {
    pub model_type: &'static str,
    /// Human name, for `doctor` and the README.
    pub name: &'static str,
    pub vision: VisionKind,
    pub decoder: DecoderKind,
    pub rope: RopeLayout,
    /// Vision `hidden_act` the weights were trained with (the only one accepted).
    pub vision_act: &'static str,
    pub default_patch_size: usize,
    pub default_mrope_section: [usize; 3],
    pub default_rope_theta: f64,
    /// Whether the decoder accepts a `head_dim` other than `hidden_size / num_attention_heads`.
    pub free_head_dim: bool,
    /// Whether the preprocessor's defaults use mean = std = 0.5 rather than CLIP's.
    pub half_mean_std: bool,
    /// Whether decoder layers route tokens to experts (Qwen3-VL-MoE).
    pub moe: bool,
    /// Example Hub ids (README, `doctor`).
    pub examples: &'static [&'static str],
}

/// Qwen2.5-VL (and MiMo-VL, which shares its architecture); Qwen2-VL differs in its vision tower.
const QWEN2_5_VL: Family = Family {
    model_type: "qwen2_5_vl",
    name: "Qwen2.5-VL",
    vision: VisionKind::Qwen2_5,
    decoder: DecoderKind::Qwen2,
    rope: RopeLayout::Chunked,
    vision_act: "silu",
    default_patch_size: 14,
    default_mrope_section: [16, 24, 24],
    default_rope_theta: 1_000_000.0,
    free_head_dim: false,
    half_mean_std: false,
    moe: false,
    examples: &[
        "Qwen/Qwen2.5-VL-3B-Instruct",
        "Qwen/Qwen2.5-VL-7B-Instruct",
        "XiaomiMiMo/MiMo-VL-7B-RL",
    ],
};

/// Qwen3-VL dense; the MoE variant differs only in its feed-forward layers.
const QWEN3_VL: Family = Family {
    model_type: "qwen3_vl",
    name: "Qwen3-VL",
    vision: VisionKind::Qwen3,
    decoder: DecoderKind::Qwen3,
    rope: RopeLayout::Interleaved,
    vision_act: "gelu_pytorch_tanh",
    default_patch_size: 16,
    default_mrope_section: [24, 20, 20],
    default_rope_theta: 500_000.0,
    free_head_dim: true,
    half_mean_std: true,
    moe: false,
    examples: &[
        "Qwen/Qwen3-VL-2B-Instruct",
        "Qwen/Qwen3-VL-4B-Thinking",
        "Qwen/Qwen3-VL-8B-Instruct",
    ],
};

/// Every family rhlens runs, in the order `doctor` and errors list them.
pub const FAMILIES: &[Family] = &[
    Family {
        model_type: "qwen2_vl",
        name: "Qwen2-VL",
        vision: VisionKind::Qwen2,
        vision_act: "quick_gelu",
        examples: &["Qwen/Qwen2-VL-2B-Instruct", "Qwen/Qwen2-VL-7B-Instruct"],
        ..QWEN2_5_VL
    },
    QWEN2_5_VL,
    QWEN3_VL,
    Family {
        model_type: "qwen3_vl_moe",
        name: "Qwen3-VL-MoE",
        moe: true,
        examples: &[
            "Qwen/Qwen3-VL-30B-A3B-Instruct",
            "Qwen/Qwen3-VL-30B-A3B-Thinking",
        ],
        ..QWEN3_VL
    },
];

/// The family of `model_type`, or a message listing the supported ones.
pub fn family(model_type: &str) -> Result<&'static Family, String> {
    FAMILIES
        .iter()
        .find(|f| f.model_type == model_type)
        .ok_or_else(|| {
            format!(
                "unsupported model_type `{model_type}`; rhlens supports: {}",
                supported_model_types().join(", ")
            )
        })
}

/// The `model_type` values rhlens reads, in table order.
pub fn supported_model_types() -> Vec<&'static str> {
    FAMILIES.iter().map(|f| f.model_type).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_model_type_lists_every_family() {
        let e = family("llava").unwrap_err();
        for f in FAMILIES {
            assert!(e.contains(f.model_type), "{e}");
        }
        assert_eq!(family("qwen3_vl").unwrap().default_patch_size, 16);
    }
}
