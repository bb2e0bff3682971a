//! Errors about settings a caller gave. The library names a setting by its field name
//! (`top_p`); the command line shows the same error with the setting's flag (`--top-p`), so no
//! library module needs to know the flags.
use std::fmt;

/// A setting the library cannot use. `reason` may name other settings between backticks
/// (`` "is larger than `think_budget` 20" ``); [`InvalidSetting::phrase`] renders every name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSetting {
    pub setting: &'static str,
    pub reason: String,
}

impl InvalidSetting {
    pub fn new(setting: &'static str, reason: impl Into<String>) -> Self {
        Self {
            setting,
            reason: reason.into(),
        }
    }

    /// The message with each setting name shown as `name(setting)` (the command line passes a
    /// function giving the flag).
    pub fn phrase(&self, name: &dyn Fn(&str) -> String) -> String {
        let mut out = name(self.setting);
        out.push(' ');
        for (i, part) in self.reason.split('`').enumerate() {
            if i % 2 == 1 {
                out.push_str(&name(part));
            } else {
                out.push_str(part);
            }
        }
        out
    }
}

impl fmt::Display for InvalidSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.phrase(&|s| s.to_string()))
    }
}

impl std::error::Error for InvalidSetting {}

/// `Err(InvalidSetting)` as an `anyhow::Error`, for `?` in library code.
pub fn invalid<T>(setting: &'static str, reason: impl Into<String>) -> anyhow::Result<T> {
    Err(InvalidSetting::new(setting, reason).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_render_in_library_and_flag_terms() {
        let e = InvalidSetting::new("min_think", "50 is larger than `think_budget` 20");
        assert_eq!(e.to_string(), "min_think 50 is larger than think_budget 20");
        let flag = |s: &str| format!("--{}", s.replace('_', "-"));
        assert_eq!(
            e.phrase(&flag),
            "--min-think 50 is larger than --think-budget 20"
        );
    }
}
