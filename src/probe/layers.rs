//! The prompt-only layer analysis: for each decoder layer, the head-mean attention of one query
//! row on the system / visual / instruction tokens, per question and averaged over a question set.
//!
//! Two query rows are offered. [`QueryRow::UserEnd`] is the paper's analysis: the chat template
//! rendered without the generation prompt, the row of its last token (the end of the user turn).
//! [`QueryRow::AssistantStart`] renders the assistant header too and reads the row of its last
//! token, the position whose attention produces the first answer token. The spans are the same in
//! both: system = up to and including the vision-start token, visual = the image tokens,
//! instruction = everything after them.
use std::path::Path;

use anyhow::{bail, Context, Result};
use ndarray::{s, Array2, Array3, Axis};
use serde::{Deserialize, Serialize};

use super::run::allocation_of;
use crate::formats::shares::normalise_rows;
use crate::formats::ROLE_NAMES;
use crate::fsutil::write_atomic;
use crate::runtime::Runtime;

/// Which prompt row the analysis reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueryRow {
    /// the paper's: the last token of the user turn, template without the generation prompt
    #[default]
    UserEnd,
    /// the last token of the assistant header (template with the generation prompt)
    AssistantStart,
}

impl QueryRow {
    pub fn name(self) -> &'static str {
        match self {
            QueryRow::UserEnd => "user-end",
            QueryRow::AssistantStart => "assistant-start",
        }
    }
}

/// The three prompt roles the analysis reports (the first three of [`ROLE_NAMES`]).
pub const PROMPT_ROLES: usize = 3;

/// One question of the analysis.
pub struct LayerQuestion<'a> {
    pub id: &'a str,
    pub image: &'a Path,
    pub question: &'a str,
}

/// One question's allocation, `[layers, 3]` (system, visual, instruction).
pub fn query_allocation(
    rt: &Runtime,
    image: &Path,
    question: &str,
    system: Option<&str>,
    query: QueryRow,
) -> Result<Array2<f32>> {
    let with_header = query == QueryRow::AssistantStart;
    let prompt = rt.prepare_turn(image, question, system, with_header)?;
    let all = allocation_of(rt, &prompt)?;
    Ok(all.slice(s![.., 0..PROMPT_ROLES]).to_owned())
}

/// The analysis over a question set.
pub struct LayerAnalysis {
    pub query: QueryRow,
    /// ids of the questions used, in order
    pub ids: Vec<String>,
    /// `[samples, layers, 3]`: each question's shares (each row sums to 1: the three spans
    /// cover the whole prompt)
    pub per_sample: Array3<f32>,
    /// `[layers, 3]`: the mean over samples, renormalised per layer (the paper's bars)
    pub mean: Array2<f32>,
    /// `[layers, 3]`: the population standard deviation over samples of each share
    pub std: Array2<f32>,
    /// questions that failed, and why (id, reason)
    pub failed: Vec<(String, String)>,
}

/// Run the analysis on every question; `done` is called after each.
pub fn analyse(
    rt: &Runtime,
    questions: &[LayerQuestion<'_>],
    system: Option<&str>,
    query: QueryRow,
    done: &mut dyn FnMut(),
) -> Result<LayerAnalysis> {
    let mut rows = Vec::new();
    let mut ids = Vec::new();
    let mut failed = Vec::new();
    for q in questions {
        match query_allocation(rt, q.image, q.question, system, query) {
            Ok(a) => {
                rows.push(a);
                ids.push(q.id.to_string());
            }
            Err(e) => failed.push((q.id.to_string(), format!("{e:#}"))),
        }
        done();
    }
    if rows.is_empty() {
        bail!("every question failed; nothing to average");
    }
    let views: Vec<_> = rows.iter().map(|a| a.view()).collect();
    let per_sample: Array3<f32> = ndarray::stack(Axis(0), &views)?;
    let mut mean = per_sample.mean_axis(Axis(0)).context("no samples")?;
    let std = per_sample.std_axis(Axis(0), 0.0);
    normalise_rows(&mut mean);
    Ok(LayerAnalysis {
        query,
        ids,
        per_sample,
        mean,
        std,
        failed,
    })
}

impl LayerAnalysis {
    pub fn samples(&self) -> usize {
        self.ids.len()
    }

    pub fn layers(&self) -> usize {
        self.mean.nrows()
    }

    /// `allocation.csv` (mean and spread per layer), `allocation_samples.csv` (per question and
    /// layer), `allocation.json` (`header` plus everything, with the `skipped` records (record,
    /// reason) and the failed questions) and `allocation.safetensors`.
    pub fn write(
        &self,
        out: &Path,
        header: serde_json::Value,
        skipped: &[(String, String)],
    ) -> Result<()> {
        let roles = &ROLE_NAMES[..PROMPT_ROLES];
        let mut csv = format!("layer,{},{}_std\n", roles.join(","), roles.join("_std,"));
        for l in 0..self.layers() {
            let m = self.mean.row(l);
            let d = self.std.row(l);
            csv.push_str(&format!(
                "{l},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6}\n",
                m[0], m[1], m[2], d[0], d[1], d[2]
            ));
        }
        write_atomic(&out.join("allocation.csv"), csv.as_bytes())?;
        let mut per = format!("id,layer,{}\n", roles.join(","));
        for (i, id) in self.ids.iter().enumerate() {
            for l in 0..self.layers() {
                let r = self.per_sample.slice(s![i, l, ..]);
                per.push_str(&format!(
                    "{},{l},{:.6},{:.6},{:.6}\n",
                    csv_field(id),
                    r[0],
                    r[1],
                    r[2]
                ));
            }
        }
        write_atomic(&out.join("allocation_samples.csv"), per.as_bytes())?;
        self.write_json(out, header, skipped)?;
        self.write_tensors(out)
    }

    fn write_json(
        &self,
        out: &Path,
        header: serde_json::Value,
        skipped: &[(String, String)],
    ) -> Result<()> {
        let rows = |a: &Array2<f32>| a.outer_iter().map(|r| r.to_vec()).collect::<Vec<_>>();
        let skipped: Vec<_> = skipped
            .iter()
            .chain(&self.failed)
            .map(|(id, why)| serde_json::json!({"record": id, "reason": why}))
            .collect();
        let mut json = header;
        json["query"] = self.query.name().into();
        json["roles"] = serde_json::json!(&ROLE_NAMES[..PROMPT_ROLES]);
        json["samples"] = self.samples().into();
        json["sample_ids"] = serde_json::json!(self.ids);
        json["skipped"] = skipped.into();
        json["allocation"] = serde_json::json!(rows(&self.mean));
        json["std"] = serde_json::json!(rows(&self.std));
        json["std_note"] =
            "population standard deviation over samples of each sample's share".into();
        json["per_sample"] = serde_json::json!(self
            .per_sample
            .outer_iter()
            .map(|a| rows(&a.to_owned()))
            .collect::<Vec<_>>());
        write_atomic(
            &out.join("allocation.json"),
            serde_json::to_string_pretty(&json)?.as_bytes(),
        )?;
        Ok(())
    }

    fn write_tensors(&self, out: &Path) -> Result<()> {
        let (n, layers) = (self.samples() as i64, self.layers() as i64);
        let k = PROMPT_ROLES as i64;
        let t = |a: &[f32], shape: &[i64]| tch::Tensor::from_slice(a).view(shape);
        let mean = t(self.mean.as_slice().context("layout")?, &[layers, k]);
        let std = t(self.std.as_slice().context("layout")?, &[layers, k]);
        let all = t(
            self.per_sample.as_slice().context("layout")?,
            &[n, layers, k],
        );
        let named = [
            ("prompt_role_attention", &mean),
            ("prompt_role_attention_std", &std),
            ("per_sample", &all),
        ];
        crate::fsutil::replace_with(&out.join("allocation.safetensors"), |tmp| {
            tch::Tensor::write_safetensors(&named, tmp).map_err(std::io::Error::other)
        })?;
        Ok(())
    }
}

/// `s` quoted when it holds a comma, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
