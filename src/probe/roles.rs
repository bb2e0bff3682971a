//! Token roles: which part of the conversation each position belongs to.
use crate::formats::{Role, RoleSpan};
use crate::runtime::PromptSpans;

/// Spans over prompt + generated positions. Generated tokens before `answer_start` are reasoning
/// (forced text included), the rest answer.
pub fn role_spans(
    prompt: &PromptSpans,
    prompt_len: usize,
    generated: usize,
    answer_start: usize,
) -> Vec<RoleSpan> {
    let mut spans = Vec::new();
    let mut push = |role: Role, start: usize, end: usize| {
        if end > start {
            spans.push(RoleSpan::new(role, start, end));
        }
    };
    push(Role::System, prompt.system.0, prompt.system.1);
    push(Role::Visual, prompt.visual.0, prompt.visual.1);
    push(Role::Instruction, prompt.instruction.0, prompt_len);
    let a = answer_start.min(generated);
    push(Role::Reasoning, prompt_len, prompt_len + a);
    push(Role::Answer, prompt_len + a, prompt_len + generated);
    spans
}

/// Role index of every prompt position (positions added by `--open-think` count as instruction).
pub fn prompt_roles(prompt: &PromptSpans, prompt_len: usize) -> Vec<Role> {
    (0..prompt_len)
        .map(|i| {
            if i < prompt.system.1 {
                Role::System
            } else if i < prompt.visual.1 {
                Role::Visual
            } else {
                Role::Instruction
            }
        })
        .collect()
}
