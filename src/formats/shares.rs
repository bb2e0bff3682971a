//! Role shares: how a trace's attention divides among token roles, reduced from the saved
//! `role_attention` (`[steps, layers, roles]`) and friends, and the one rule that splits layers
//! into early / middle / late groups. Model-free: figures, sweep summaries and eval records all
//! reduce through here.

use std::ops::Range;

use ndarray::{Array2, Array3, Array4, NdFloat};

use super::roles::{Role, ROLE_NAMES};
use super::trace::{TraceArrays, TraceMeta};

/// A group of layers by depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerGroup {
    /// Every layer: fewer than three layers are not split.
    All,
    Early,
    Middle,
    Late,
}

impl LayerGroup {
    /// Lower-case words for legends and titles.
    pub fn name(self) -> &'static str {
        match self {
            LayerGroup::All => "selected",
            LayerGroup::Early => "early",
            LayerGroup::Middle => "middle",
            LayerGroup::Late => "late",
        }
    }
}

/// The layer-group rule: `n >= 3` layers split into thirds of `ceil(n/3)`, then
/// `ceil(2n/3) - ceil(n/3)`, then the rest (layer `l` is in third `floor(3l/n)`); fewer layers
/// form one group. Ranges index the given layer list.
pub fn layer_groups(n: usize) -> Vec<(LayerGroup, Range<usize>)> {
    if n < 3 {
        return vec![(LayerGroup::All, 0..n)];
    }
    let a = n.div_ceil(3);
    let b = a + (n - a).div_ceil(2);
    vec![
        (LayerGroup::Early, 0..a),
        (LayerGroup::Middle, a..b),
        (LayerGroup::Late, b..n),
    ]
}

/// Renormalises every row of a `[rows, roles]` matrix to sum to one (zero rows stay zero).
pub fn normalise_rows<A: NdFloat>(a: &mut Array2<A>) {
    for mut row in a.rows_mut() {
        let total = row.iter().fold(A::zero(), |acc, &v| acc + v);
        if total > A::zero() {
            row.mapv_inplace(|v| v / total);
        }
    }
}

/// Per-layer shares during generation: for each given layer position, the mass per role summed
/// over steps and renormalised, `[positions, roles]`.
pub fn generation_shares(role_attention: &Array3<f32>, positions: &[usize]) -> Array2<f64> {
    let (steps, _, roles) = role_attention.dim();
    let mut out = Array2::<f64>::zeros((positions.len(), roles));
    for (i, &p) in positions.iter().enumerate() {
        for s in 0..steps {
            for r in 0..roles {
                out[[i, r]] += role_attention[[s, p, r]] as f64;
            }
        }
    }
    normalise_rows(&mut out);
    out
}

/// [`generation_shares`] of every layer: `[layers, roles]`. Layers whose total mass is zero stay
/// zero.
pub fn mean_role_shares(role_attention: &Array3<f32>) -> Array2<f64> {
    let layers: Vec<usize> = (0..role_attention.dim().1).collect();
    generation_shares(role_attention, &layers)
}

/// Per-step shares averaged over the given layer positions: `[steps, roles]`, each layer's row
/// renormalised to sum to one before averaging.
pub fn step_role_shares(role_attention: &Array3<f32>, positions: &[usize]) -> Array2<f64> {
    let (steps, _, roles) = role_attention.dim();
    let mut out = Array2::<f64>::zeros((steps, roles));
    for s in 0..steps {
        for &p in positions {
            let total: f64 = (0..roles).map(|r| role_attention[[s, p, r]] as f64).sum();
            if total > 0.0 {
                for r in 0..roles {
                    out[[s, r]] += role_attention[[s, p, r]] as f64 / total;
                }
            }
        }
    }
    out.mapv_inplace(|v| v / positions.len().max(1) as f64);
    out
}

/// Rows `positions` of a `[layers, roles]` mass matrix (e.g. the last prompt token's
/// `prompt_role_attention`), renormalised: `[positions, roles]`.
pub fn layer_shares(mass: &Array2<f32>, positions: &[usize]) -> Array2<f64> {
    let mut out = Array2::<f64>::zeros((positions.len(), mass.ncols()));
    for (i, &p) in positions.iter().enumerate() {
        for r in 0..mass.ncols() {
            out[[i, r]] = mass[[p, r]] as f64;
        }
    }
    normalise_rows(&mut out);
    out
}

/// Share of each head's attention (summed over steps) that goes to role index `role`, from
/// `role_attention_heads` (`[steps, layers, heads, roles]`): `[heads][positions]`.
pub fn head_shares(per_head: &Array4<f32>, positions: &[usize], role: usize) -> Vec<Vec<f64>> {
    let (steps, _, heads, roles) = per_head.dim();
    let mut values = vec![vec![0.0; positions.len()]; heads];
    for (c, &p) in positions.iter().enumerate() {
        for (h, row) in values.iter_mut().enumerate() {
            let mut part = 0.0;
            let mut total = 0.0;
            for s in 0..steps {
                for r in 0..roles {
                    let v = per_head[[s, p, h, r]] as f64;
                    total += v;
                    if r == role {
                        part += v;
                    }
                }
            }
            row[c] = if total > 0.0 { part / total } else { 0.0 };
        }
    }
    values
}

/// Mean attention mass per role over all steps and layers (role axis order, as `meta.roles`),
/// and the mean visual mass per [`layer_groups`] group as early / middle / late (the same value
/// three times when the trace has fewer than three layers). The visual part is `None` when the
/// trace has no visual role. Raw mass, not renormalised: these are the numbers of sweep
/// summaries and eval records.
pub fn role_shares(
    meta: &TraceMeta,
    arrays: &TraceArrays,
) -> (Option<[f64; 3]>, [f64; ROLE_NAMES.len()]) {
    let ra = &arrays.role_attention;
    let (steps, layers, roles) = ra.dim();
    let mut overall = [0f64; ROLE_NAMES.len()];
    let visual = meta.role_index(Role::Visual);
    if steps == 0 || layers == 0 {
        return (visual.map(|_| [0.0; 3]), overall);
    }
    let mut per_layer_visual = vec![0f64; layers];
    for (l, layer_visual) in per_layer_visual.iter_mut().enumerate() {
        let mut v = 0f64;
        for s in 0..steps {
            if let Some(vi) = visual {
                v += ra[[s, l, vi]] as f64;
            }
            for r in 0..roles.min(ROLE_NAMES.len()) {
                overall[r] += ra[[s, l, r]] as f64;
            }
        }
        *layer_visual = v / steps as f64;
    }
    for o in overall.iter_mut() {
        *o /= (steps * layers) as f64;
    }
    let mean = |range: Range<usize>| {
        let n = range.len() as f64;
        per_layer_visual[range].iter().fold(0.0, |acc, v| acc + v) / n
    };
    let thirds = match &layer_groups(layers)[..] {
        [(_, early), (_, middle), (_, late)] => [
            mean(early.clone()),
            mean(middle.clone()),
            mean(late.clone()),
        ],
        _ => [mean(0..layers); 3],
    };
    (visual.map(|_| thirds), overall)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thirds_put_layer_l_of_n_in_group_floor_3l_over_n() {
        for n in 3..40 {
            let groups = layer_groups(n);
            assert_eq!(groups.len(), 3);
            for (g, (_, range)) in groups.into_iter().enumerate() {
                for l in range {
                    assert_eq!(l * 3 / n, g, "layer {l} of {n}");
                }
            }
        }
        assert_eq!(layer_groups(2), vec![(LayerGroup::All, 0..2)]);
        assert_eq!(layer_groups(1), vec![(LayerGroup::All, 0..1)]);
    }

    #[test]
    fn zero_rows_stay_zero_when_normalised() {
        let mut a = ndarray::array![[1.0f32, 3.0], [0.0, 0.0]];
        normalise_rows(&mut a);
        assert_eq!(a, ndarray::array![[0.25f32, 0.75], [0.0, 0.0]]);
    }
}
