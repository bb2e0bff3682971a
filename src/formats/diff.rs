//! Which saved setting differs: resuming into a folder made with other settings must name the
//! option, not just refuse (sweeps compare a finished trace's settings, evaluations their manifest).
use serde_json::Value;

/// The first setting in which `saved` differs from `now`, walking nested objects so the name is a
/// leaf field (`max_new_tokens`, `answer_cue`): `(name, saved value, value now)`. Only the keys of
/// `now` are compared, so fields a run adds afterwards (timings) never count.
pub fn first_difference(saved: &Value, now: &Value) -> Option<(String, Value, Value)> {
    match (saved, now) {
        (Value::Object(s), Value::Object(n)) => n.iter().find_map(|(key, value)| {
            let before = s.get(key).unwrap_or(&Value::Null);
            match (before, value) {
                (Value::Object(_), Value::Object(_)) => first_difference(before, value),
                _ if before != value => Some((key.clone(), before.clone(), value.clone())),
                _ => None,
            }
        }),
        _ if saved != now => Some((String::new(), saved.clone(), now.clone())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_the_leaf_that_differs_and_ignores_added_fields() {
        let saved = json!({"max_new_tokens": 128, "length": {"answer_cue": "", "waits": 0},
                           "timing": {"ms": 3}});
        let now = json!({"max_new_tokens": 128, "length": {"answer_cue": "<answer>", "waits": 0}});
        assert_eq!(
            first_difference(&saved, &now),
            Some(("answer_cue".into(), json!(""), json!("<answer>")))
        );
        assert_eq!(
            first_difference(&saved, &json!({"max_new_tokens": 128})),
            None
        );
        let now = json!({"max_new_tokens": 64});
        assert_eq!(
            first_difference(&saved, &now),
            Some(("max_new_tokens".into(), json!(128), json!(64)))
        );
    }
}
