//! The checkpoint's own chat template, rendered the way Hugging Face renders it.
//!
//! Lookup follows transformers' processor loading (5.17): `processor_config.json`'s
//! `chat_template` key, then `chat_template.json` (`{"chat_template": ...}`), then
//! `chat_template.jinja`, and finally `tokenizer_config.json`'s `chat_template` (a string, or a
//! list of `{name, template}` of which `default` is used).
//!
//! Rendering mirrors `transformers.utils.chat_template_utils.render_jinja_template`: blocks
//! trimmed (`trim_blocks`, `lstrip_blocks`), `raise_exception(msg)` available, `tojson` behaving
//! like Python's `json.dumps` (no HTML escaping, `", "`/`": "` separators, `indent`,
//! `ensure_ascii`, `separators`, `sort_keys`), Python string/dict methods (`strip`,
//! `startswith`, `split`, `items`, `get`, ...), and the template variables HF passes:
//! `messages`, `add_generation_prompt`, `tools` and `documents` (none), and the named special
//! tokens of `tokenizer_config.json` that are set (`bos_token`, `eos_token`, `pad_token`, ...).
//! Mappings keep their key order, as Python dicts do.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use minijinja::value::{Enumerator, Kwargs, Object, ObjectRepr, ValueKind};
use minijinja::{Environment, Error, ErrorKind, Value};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;

use super::error::{ensure_dir, one_line, read_json, read_text, CheckpointError, Result};

/// Named special tokens HF passes to templates (`SPECIAL_TOKENS_ATTRIBUTES`).
const SPECIAL_TOKEN_NAMES: &[&str] = &[
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

/// A chat template plus the variables its checkpoint provides.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    origin: String,
    special_tokens: Vec<(String, String)>,
}

impl ChatTemplate {
    /// Find and compile the chat template of a checkpoint directory.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<ChatTemplate> {
        let dir = dir.as_ref();
        ensure_dir(dir)?;
        let (source, origin) = find_template(dir)?;
        let special_tokens = special_tokens(dir)?;
        ChatTemplate::new(source, origin, special_tokens)
    }

    /// A template from text. `origin` names it in error messages; `special_tokens` are extra
    /// template variables such as `("eos_token", "<|im_end|>")`.
    pub fn new(
        source: impl Into<String>,
        origin: impl Into<String>,
        special_tokens: Vec<(String, String)>,
    ) -> Result<ChatTemplate> {
        let tpl = ChatTemplate {
            source: source.into(),
            origin: origin.into(),
            special_tokens,
        };
        // Compile once now so that syntax errors surface when the checkpoint is opened.
        let env = environment();
        env.template_from_str(&tpl.source)
            .map_err(|e| tpl.err(format!("does not compile: {}", describe(&e))))?;
        Ok(tpl)
    }

    /// The template text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Where the template came from (file, and key where relevant).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Special-token variables passed to the template.
    pub fn special_tokens(&self) -> &[(String, String)] {
        &self.special_tokens
    }

    fn err(&self, msg: impl std::fmt::Display) -> CheckpointError {
        CheckpointError::Template {
            origin: self.origin.clone(),
            msg: one_line(msg),
        }
    }

    /// Render the rhlens prompt: an optional system message (string content) followed by one
    /// user message holding an image and the text, then the assistant header
    /// (`add_generation_prompt=True`). The messages are those of
    /// `[{"role": "system", "content": system}, {"role": "user", "content": [{"type": "image"},
    /// {"type": "text", "text": prompt}]}]`.
    pub fn render(&self, system: Option<&str>, prompt: &str) -> Result<String> {
        self.render_turn(system, prompt, true)
    }

    /// [`ChatTemplate::render`], with the assistant header only when `add_generation_prompt`
    /// (without it the text ends with the user turn, as the paper's layer analysis renders it).
    pub fn render_turn(
        &self,
        system: Option<&str>,
        prompt: &str,
        add_generation_prompt: bool,
    ) -> Result<String> {
        let map = |pairs: Vec<(&str, Value)>| {
            Value::from_object(OrderedMap(
                pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            ))
        };
        let mut messages = Vec::new();
        if let Some(system) = system {
            messages.push(map(vec![
                ("role", Value::from("system")),
                ("content", Value::from(system)),
            ]));
        }
        let content = vec![
            map(vec![("type", Value::from("image"))]),
            map(vec![
                ("type", Value::from("text")),
                ("text", Value::from(prompt)),
            ]),
        ];
        messages.push(map(vec![
            ("role", Value::from("user")),
            ("content", Value::from(content)),
        ]));
        self.render_values(Value::from(messages), add_generation_prompt)
    }

    /// Render any conversation given as JSON text (a list of `{role, content, ...}` objects).
    /// Mappings keep the key order of the text, as Python's `json.loads` does.
    pub fn render_json(&self, messages_json: &str, add_generation_prompt: bool) -> Result<String> {
        let messages: Ordered = serde_json::from_str(messages_json)
            .map_err(|e| self.err(format!("messages are not valid JSON: {e}")))?;
        if messages.0.kind() != ValueKind::Seq {
            return Err(self.err("messages must be a list"));
        }
        self.render_values(messages.0, add_generation_prompt)
    }

    /// What the template appends for the assistant turn (`add_generation_prompt`) after a
    /// one-image user turn asking `prompt`: `<|im_start|>assistant\n`, plus `<think>\n` for a
    /// template that opens thinking itself (Qwen3-VL Thinking, MiMo-VL).
    pub fn generation_prompt(&self, prompt: &str) -> Result<String> {
        let without = self.render_turn(None, prompt, false)?;
        let with = self.render_turn(None, prompt, true)?;
        Ok(with
            .strip_prefix(without.as_str())
            .unwrap_or(with.as_str())
            .to_string())
    }

    /// Whether the generation prompt leaves a thinking block open (`open` after the last
    /// `close`): the model's first tokens are then thinking, and adding the open tag again would
    /// nest it. A switch like `/no_think` that closes an empty block reads as not open.
    pub fn opens_think(&self, prompt: &str, open: &str, close: &str) -> Result<bool> {
        let gen = self.generation_prompt(prompt)?;
        Ok(match (gen.rfind(open), gen.rfind(close)) {
            (Some(o), Some(c)) => o > c,
            (Some(_), None) => true,
            _ => false,
        })
    }

    fn render_values(&self, messages: Value, add_generation_prompt: bool) -> Result<String> {
        let mut ctx: BTreeMap<String, Value> = BTreeMap::new();
        for (name, value) in &self.special_tokens {
            ctx.insert(name.clone(), Value::from(value.as_str()));
        }
        ctx.insert("messages".into(), messages);
        ctx.insert(
            "add_generation_prompt".into(),
            Value::from(add_generation_prompt),
        );
        ctx.insert("tools".into(), Value::from(()));
        ctx.insert("documents".into(), Value::from(()));
        let env = environment();
        let tpl = env
            .template_from_str(&self.source)
            .map_err(|e| self.err(format!("does not compile: {}", describe(&e))))?;
        tpl.render(Value::from(ctx))
            .map_err(|e| self.err(format!("rendering failed: {}", describe(&e))))
    }
}

/// Error text with the template line, without minijinja's multi-line debug dump.
fn describe(e: &Error) -> String {
    let mut msg = match (e.kind(), e.detail()) {
        // raise_exception(...) and our filters: the message as written.
        (ErrorKind::InvalidOperation, Some(detail)) => detail.to_string(),
        (kind, Some(detail)) => format!("{kind}: {detail}"),
        (kind, None) => kind.to_string(),
    };
    if let Some(line) = e.line() {
        let _ = write!(msg, " (line {line})");
    }
    one_line(msg)
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", raise_exception);
    env.add_filter("tojson", tojson);
    // Print booleans and none the way Python does (`True`, `False`, `None`).
    env.set_formatter(|out, state, value| match value.kind() {
        ValueKind::Bool => out
            .write_str(if value.is_true() { "True" } else { "False" })
            .map_err(Error::from),
        ValueKind::None => out.write_str("None").map_err(Error::from),
        _ => minijinja::escape_formatter(out, state, value),
    });
    env
}

fn raise_exception(msg: String) -> std::result::Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

// ---------------------------------------------------------------------------------------------
// Locating the template and the special tokens.

fn find_template(dir: &Path) -> Result<(String, String)> {
    let processor_config = dir.join("processor_config.json");
    if processor_config.is_file() {
        let json = read_json(&processor_config, "")?;
        if let Some(t) = json.get("chat_template").filter(|v| !v.is_null()) {
            let tpl = pick_template(t, &processor_config)?;
            return Ok((
                tpl,
                format!("{} (chat_template)", processor_config.display()),
            ));
        }
    }
    let legacy = dir.join("chat_template.json");
    if legacy.is_file() {
        let json = read_json(&legacy, "")?;
        let t = json
            .get("chat_template")
            .filter(|v| !v.is_null())
            .ok_or_else(|| CheckpointError::Template {
                origin: legacy.display().to_string(),
                msg: "has no `chat_template` key".into(),
            })?;
        return Ok((pick_template(t, &legacy)?, legacy.display().to_string()));
    }
    let raw = dir.join("chat_template.jinja");
    if raw.is_file() {
        return Ok((read_text(&raw, "")?, raw.display().to_string()));
    }
    let tokenizer_config = dir.join("tokenizer_config.json");
    if tokenizer_config.is_file() {
        let json = read_json(&tokenizer_config, "")?;
        if let Some(t) = json.get("chat_template").filter(|v| !v.is_null()) {
            let tpl = pick_template(t, &tokenizer_config)?;
            return Ok((
                tpl,
                format!("{} (chat_template)", tokenizer_config.display()),
            ));
        }
    }
    Err(CheckpointError::Template {
        origin: dir.display().to_string(),
        msg: "no chat template found (looked for processor_config.json, chat_template.json, \
              chat_template.jinja and tokenizer_config.json's `chat_template`)"
            .into(),
    })
}

/// A template value: a string, or a list of `{name, template}` from which `default` is taken.
fn pick_template(value: &Json, path: &Path) -> Result<String> {
    let bad = |msg: String| CheckpointError::Template {
        origin: path.display().to_string(),
        msg,
    };
    match value {
        Json::String(s) => Ok(s.clone()),
        Json::Array(items) => {
            let mut names = Vec::new();
            for item in items {
                let name = item.get("name").and_then(Json::as_str);
                let template = item.get("template").and_then(Json::as_str);
                match (name, template) {
                    (Some("default"), Some(t)) => return Ok(t.to_string()),
                    (Some(n), Some(_)) => names.push(n.to_string()),
                    _ => {
                        return Err(bad(
                            "`chat_template` list entries must be {\"name\", \"template\"} objects"
                                .into(),
                        ))
                    }
                }
            }
            Err(bad(format!(
                "has several chat templates but none named `default` (found: {})",
                names.join(", ")
            )))
        }
        Json::Object(map) => match map.get("default").and_then(Json::as_str) {
            Some(t) => Ok(t.to_string()),
            None => Err(bad(
                "`chat_template` is a mapping without a `default` template".into(),
            )),
        },
        other => Err(bad(format!(
            "`chat_template` must be a string or a list of templates, found {other}"
        ))),
    }
}

/// Content of a special-token entry: a string or an AddedToken object with `content`.
fn token_content(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Object(m) => m.get("content").and_then(Json::as_str).map(str::to_string),
        _ => None,
    }
}

/// Named special tokens from tokenizer_config.json, completed from special_tokens_map.json.
fn special_tokens(dir: &Path) -> Result<Vec<(String, String)>> {
    let mut found: BTreeMap<&str, String> = BTreeMap::new();
    for file in ["tokenizer_config.json", "special_tokens_map.json"] {
        let path = dir.join(file);
        if !path.is_file() {
            continue;
        }
        let json = read_json(&path, "")?;
        for &name in SPECIAL_TOKEN_NAMES {
            if found.contains_key(name) {
                continue;
            }
            if let Some(content) = json.get(name).and_then(token_content) {
                found.insert(name, content);
            }
        }
    }
    Ok(SPECIAL_TOKEN_NAMES
        .iter()
        .filter_map(|&n| found.get(n).map(|v| (n.to_string(), v.clone())))
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Values: JSON → template values, keeping mapping order like Python dicts.

#[derive(Debug)]
struct OrderedMap(Vec<(String, Value)>);

impl Object for OrderedMap {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let key = key.as_str()?;
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(
            self.0
                .iter()
                .map(|(k, _)| Value::from(k.as_str()))
                .collect(),
        )
    }
}

/// A template value deserialised from JSON text with mapping order preserved.
struct Ordered(Value);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_any(OrderedVisitor)
    }
}

struct OrderedVisitor;

impl<'de> Visitor<'de> for OrderedVisitor {
    type Value = Ordered;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> std::result::Result<Ordered, E> {
        Ok(Ordered(Value::from(v)))
    }
    fn visit_i64<E>(self, v: i64) -> std::result::Result<Ordered, E> {
        Ok(Ordered(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> std::result::Result<Ordered, E> {
        Ok(Ordered(Value::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> std::result::Result<Ordered, E> {
        Ok(Ordered(Value::from(v)))
    }
    fn visit_str<E>(self, v: &str) -> std::result::Result<Ordered, E> {
        Ok(Ordered(Value::from(v)))
    }
    fn visit_unit<E>(self) -> std::result::Result<Ordered, E> {
        Ok(Ordered(Value::from(())))
    }
    fn visit_none<E>(self) -> std::result::Result<Ordered, E> {
        Ok(Ordered(Value::from(())))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Ordered, D::Error> {
        Ordered::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Ordered, A::Error> {
        let mut items = Vec::new();
        while let Some(Ordered(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Ordered(Value::from(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Ordered, A::Error> {
        let mut entries: Vec<(String, Value)> = Vec::new();
        while let Some((key, Ordered(value))) = map.next_entry::<String, Ordered>()? {
            // A repeated key keeps its first position and takes the last value, as in Python.
            match entries.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => entries.push((key, value)),
            }
        }
        Ok(Ordered(Value::from_object(OrderedMap(entries))))
    }
}

// ---------------------------------------------------------------------------------------------
// `tojson` with Python `json.dumps` semantics (HF overrides Jinja's HTML-escaping filter).

struct JsonStyle {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    ensure_ascii: bool,
    sort_keys: bool,
}

fn tojson(value: &Value, kwargs: Kwargs) -> std::result::Result<Value, Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => {
            if let Some(s) = v.as_str() {
                Some(s.to_string())
            } else if let Some(n) = v.as_i64() {
                Some(" ".repeat(n.max(0) as usize))
            } else {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: indent must be an integer or a string",
                ));
            }
        }
    };
    // Python's defaults: (', ', ': ') without indent, (',', ': ') with it.
    let (item_sep, key_sep) = match separators {
        Some(seps) if seps.len() == 2 => (seps[0].clone(), seps[1].clone()),
        Some(_) => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "tojson: separators must be a pair of strings",
            ))
        }
        None if indent.is_some() => (",".to_string(), ": ".to_string()),
        None => (", ".to_string(), ": ".to_string()),
    };
    let style = JsonStyle {
        indent,
        item_sep,
        key_sep,
        ensure_ascii: ensure_ascii.unwrap_or(false),
        sort_keys: sort_keys.unwrap_or(false),
    };
    let mut out = String::new();
    write_json(&mut out, value, &style, 0)?;
    Ok(Value::from(out))
}

fn newline(out: &mut String, style: &JsonStyle, level: usize) {
    if let Some(indent) = &style.indent {
        out.push('\n');
        for _ in 0..level {
            out.push_str(indent);
        }
    }
}

fn write_json(
    out: &mut String,
    value: &Value,
    style: &JsonStyle,
    level: usize,
) -> std::result::Result<(), Error> {
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if value.is_integer() {
                let _ = write!(out, "{value}");
            } else {
                let f = f64::try_from(value.clone())?;
                out.push_str(&py_float_repr(f));
            }
        }
        ValueKind::String => write_json_str(out, value.as_str().unwrap_or_default(), style),
        ValueKind::Map => {
            let mut keys: Vec<Value> = value.try_iter()?.collect();
            if style.sort_keys {
                keys.sort_by_key(|k| k.to_string());
            }
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_sep);
                }
                newline(out, style, level + 1);
                // Python converts non-string keys with str(); JSON keys are always strings.
                let key_text = match key.as_str() {
                    Some(s) => s.to_string(),
                    None => {
                        let mut tmp = String::new();
                        write_json(&mut tmp, key, style, 0)?;
                        tmp
                    }
                };
                write_json_str(out, &key_text, style);
                out.push_str(&style.key_sep);
                write_json(out, &value.get_item(key)?, style, level + 1)?;
            }
            newline(out, style, level);
            out.push('}');
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_sep);
                }
                newline(out, style, level + 1);
                write_json(out, item, style, level + 1)?;
            }
            newline(out, style, level);
            out.push(']');
        }
        ValueKind::Undefined => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "tojson: value is undefined",
            ))
        }
        _ => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: cannot serialise a {} value", value.kind()),
            ))
        }
    }
    Ok(())
}

fn write_json_str(out: &mut String, s: &str, style: &JsonStyle) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            // ensure_ascii escapes everything outside ' '..='~' (so DEL too), astral chars as
            // UTF-16 surrogate pairs.
            c if style.ensure_ascii && (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{:04x}", unit);
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)` as `json.dumps` writes it (shortest round-trip digits, scientific
/// notation outside 1e-4 <= |x| < 1e16, two-digit exponents).
fn py_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    let sci = format!("{:e}", f.abs()); // e.g. "1.2345e3", "1e-6"
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let n = digits.len() as i32;
    let sign = if f < 0.0 { "-" } else { "" };
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            if n <= exp + 1 {
                format!("{sign}{digits}{}.0", "0".repeat((exp + 1 - n) as usize))
            } else {
                let (a, b) = digits.split_at((exp + 1) as usize);
                format!("{sign}{a}.{b}")
            }
        } else {
            format!("{sign}0.{}{digits}", "0".repeat((-exp - 1) as usize))
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{frac}e{esign}{:02}", exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::py_float_repr;

    #[test]
    fn float_repr_matches_python() {
        // Values and strings from CPython's repr().
        for (f, s) in [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1e-6, "1e-06"),
            (1e-4, "0.0001"),
            (123456.789, "123456.789"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e15, "1000000000000000.0"),
            (-2.5, "-2.5"),
            (1e300, "1e+300"),
            (5e-324, "5e-324"),
        ] {
            assert_eq!(py_float_repr(f), s, "{f}");
        }
    }
}
