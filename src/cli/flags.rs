//! Flag values parsed into the library's types at the edge, so that a bad value is a usage
//! error, and the library's setting names shown as the flags that set them.
use clap::builder::PossibleValue;
use clap::ValueEnum;
use tch::Kind;

use crate::model::DTYPES;

/// `--dtype`: one of the library's [`DTYPES`] by any of its names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dtype(pub Kind);

const DTYPE_VALUES: [Dtype; 3] = [Dtype(DTYPES[0].0), Dtype(DTYPES[1].0), Dtype(DTYPES[2].0)];

impl ValueEnum for Dtype {
    fn value_variants<'a>() -> &'a [Self] {
        &DTYPE_VALUES
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        let (_, names) = DTYPES.iter().find(|(kind, _)| *kind == self.0)?;
        Some(PossibleValue::new(names[0]).aliases(names[1..].iter().copied()))
    }
}

/// `--attn-precision`: the precision of the captured attention probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AttnPrecision {
    /// as the model computes them (like Hugging Face's eager path)
    Model,
    /// float32 even when the model runs in bf16/f16
    F32,
}

impl AttnPrecision {
    pub fn f32_probs(self) -> bool {
        self == AttnPrecision::F32
    }
}

/// Library settings whose flag is not the setting's name with dashes.
const FLAG_OF_SETTING: &[(&str, &str)] = &[
    ("window", "--map-window"),
    ("f32_probs", "--attn-precision"),
    ("visual_heads", "--per-head"),
];

/// The flag that sets a library setting: `top_p` → `--top-p`, unless the table says otherwise.
pub fn flag(setting: &str) -> String {
    match FLAG_OF_SETTING.iter().find(|(name, _)| *name == setting) {
        Some((_, flag)) => flag.to_string(),
        None => format!("--{}", setting.replace('_', "-")),
    }
}

/// The one overwrite rule of commands whose output is not a resumable run: an existing `--out`
/// is refused unless `--force` (sweep and eval resume instead; figures draws into a folder).
pub fn refuse_existing(out: &std::path::Path, force: bool) -> anyhow::Result<()> {
    if out.exists() && !force {
        anyhow::bail!(
            "{} already exists: choose another --out or pass --force to replace it",
            out.display()
        );
    }
    Ok(())
}

/// A warning about a setting that did not take effect, in flag terms, on stderr.
pub fn warn(setting: &crate::error::InvalidSetting) {
    eprintln!("warning: {}", setting.phrase(&flag));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_read_as_flags() {
        assert_eq!(flag("top_p"), "--top-p");
        assert_eq!(flag("device"), "--device");
        assert_eq!(flag("wait_text"), "--wait-text");
        assert_eq!(flag("window"), "--map-window");
    }

    #[test]
    fn dtype_names_come_from_the_library() {
        let parse = |s: &str| Dtype::from_str(s, false).map(|d| d.0);
        assert_eq!(parse("bf16"), Ok(Kind::BFloat16));
        assert_eq!(parse("fp16"), Ok(Kind::Half));
        assert_eq!(parse("float32"), Ok(Kind::Float));
        assert!(parse("f64").is_err());
    }
}
