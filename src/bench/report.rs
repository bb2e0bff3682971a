//! Plain-text tables for the terminal.

use super::metrics::{GroupMean, ModelRhAuc, SettingMetrics};

/// Render rows as an aligned table; `right[i]` right-aligns column `i` (numbers).
pub fn table(header: &[&str], right: &[bool], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: &[String]| -> String {
        cells
            .iter()
            .enumerate()
            .take(widths.len())
            .map(|(i, c)| {
                let w = widths[i];
                if right.get(i).copied().unwrap_or(false) {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let head: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    let mut out = line(&head);
    out.push('\n');
    out.push_str(&line(&rule));
    out.push('\n');
    for r in rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

fn pct(v: Option<f64>) -> String {
    v.map(|x| format!("{:.1}", 100.0 * x))
        .unwrap_or_else(|| "-".into())
}

/// Accuracies per (model, setting), in percent.
pub fn metrics_table(rows: &[SettingMetrics]) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.model.clone(),
                r.setting.clone(),
                pct(r.reasoning),
                pct(r.perception),
                pct(r.hallucination),
                r.mean_think_tokens
                    .map(|t| format!("{t:.1}"))
                    .unwrap_or_else(|| "-".into()),
                r.n_reasoning.to_string(),
                r.n_perception.to_string(),
                r.scorer.clone(),
            ]
        })
        .collect();
    table(
        &[
            "model",
            "setting",
            "reasoning %",
            "perception %",
            "halluc. %",
            "think tok",
            "n_r",
            "n_p",
            "scorer",
        ],
        &[false, false, true, true, true, true, true, true, false],
        &body,
    )
}

/// RH-AUC per model with its interval, or the reason it is undefined.
pub fn rhauc_table(models: &[ModelRhAuc]) -> String {
    let body: Vec<Vec<String>> = models
        .iter()
        .map(|m| {
            let ci = m
                .bootstrap
                .as_ref()
                .and_then(|b| {
                    let (lo, hi) = (b.lo?, b.hi?);
                    let und = if b.undefined > 0 {
                        format!(" ({} of {} undefined)", b.undefined, b.resamples)
                    } else {
                        String::new()
                    };
                    Some(format!("[{lo:.3}, {hi:.3}]{und}"))
                })
                .unwrap_or_else(|| "-".into());
            vec![
                if m.model.is_empty() {
                    "(all)".into()
                } else {
                    m.model.clone()
                },
                m.n_points.to_string(),
                m.rh_auc
                    .map(|v| format!("{v:.3}"))
                    .unwrap_or_else(|| "undefined".into()),
                ci,
                m.rh_auc_unnormalized
                    .map(|v| format!("{v:.3}"))
                    .unwrap_or_else(|| "-".into()),
                m.scorer.clone().unwrap_or_else(|| "-".into()),
                m.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            "model",
            "points",
            "RH-AUC",
            "95% CI",
            "unnormalised",
            "scorer",
            "note",
        ],
        &[false, true, true, false, true, false, false],
        &body,
    )
}

/// Means per group (accuracies in percent).
pub fn group_table(label: &str, groups: &[GroupMean]) -> String {
    let body: Vec<Vec<String>> = groups
        .iter()
        .map(|g| {
            vec![
                g.group.clone(),
                g.n.to_string(),
                format!("{:.1}", 100.0 * g.reasoning),
                format!("{:.1}", 100.0 * g.perception),
                g.rh_auc
                    .map(|v| format!("{v:.3}"))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &[
            label,
            "models",
            "reasoning %",
            "perception %",
            "mean RH-AUC",
        ],
        &[false, true, true, true, true],
        &body,
    )
}
