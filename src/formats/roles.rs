//! Token roles: which part of the conversation each position belongs to. The one list of roles;
//! files store them by name (`"visual"`), code uses [`Role`].
use serde::{Deserialize, Serialize};

/// Role names, in the order of the role axis of every array rhlens saves.
pub const ROLE_NAMES: [&str; 5] = ["system", "visual", "instruction", "reasoning", "answer"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System = 0,
    Visual = 1,
    Instruction = 2,
    Reasoning = 3,
    Answer = 4,
}

impl Role {
    /// Every role, in array order.
    pub const ALL: [Role; 5] = [
        Role::System,
        Role::Visual,
        Role::Instruction,
        Role::Reasoning,
        Role::Answer,
    ];
    /// The roles of prompt positions (the prompt-only layer analysis has only these).
    pub const PROMPT: [Role; 3] = [Role::System, Role::Visual, Role::Instruction];

    /// The name files use.
    pub fn name(self) -> &'static str {
        ROLE_NAMES[self as usize]
    }

    /// The role a file names, if rhlens knows it.
    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }

    /// Index on the role axis of arrays rhlens writes.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A half-open range `[start, end)` of token positions (prompt positions first, then generated
/// positions: generated token `s` sits at position `prompt_tokens + s`) labelled with a role.
/// The role is kept by name: a trace may list roles this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleSpan {
    pub role: String,
    pub start: usize,
    pub end: usize,
}

impl RoleSpan {
    pub fn new(role: Role, start: usize, end: usize) -> Self {
        Self {
            role: role.name().to_string(),
            start,
            end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_in_array_order() {
        for (i, r) in Role::ALL.into_iter().enumerate() {
            assert_eq!(r.index(), i);
            assert_eq!(Role::from_name(r.name()), Some(r));
        }
        assert_eq!(Role::from_name("extra"), None);
    }
}
