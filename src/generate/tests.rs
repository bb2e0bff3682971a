//! Length control followed through [`Row`] with the tiny fixture tokenizer and scripted model
//! choices (one-hot logits under greedy selection): no model weights involved. Token ids are those
//! of `tests/fixtures/models/tiny-flat/tokenizer.json`.
use tch::Tensor;

use super::*;
use crate::checkpoint::TextTokenizer;

const EOS: i64 = 558;
/// `a`, ` b`, ` c`, ` d`, ` e`
const A: i64 = 64;
const B: i64 = 263;
const C: i64 = 268;
const D: i64 = 304;
const E: i64 = 434;
/// `</think>` as `<` `/` `t` `h` `ink` `>`
const CLOSE: [i64; 6] = [27, 14, 83, 71, 444, 29];
/// `<answer>` as `<` `an` `swer` `>`
const ANSWER: [i64; 4] = [27, 278, 319, 29];
/// ` Wait` as `Ġ` `W` `ait`
const SPACE_WAIT: [i64; 3] = [220, 54, 484];
/// ` again`
const AGAIN: i64 = 513;

fn tokenizer() -> TextTokenizer {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/models/tiny-flat"
    );
    TextTokenizer::from_dir(dir).unwrap()
}

fn config(max_new_tokens: usize) -> GenerateConfig {
    GenerateConfig {
        max_new_tokens,
        ..Default::default()
    }
}

/// Logits `[V]` scoring `scores` (token, score) and 0 elsewhere.
fn logits(tok: &TextTokenizer, scores: &[(i64, f64)]) -> Tensor {
    let l = Tensor::zeros(
        [tok.vocab_size() as i64],
        (tch::Kind::Float, tch::Device::Cpu),
    );
    for &(t, s) in scores {
        let _ = l.get(t).fill_(s);
    }
    l
}

/// Run `row` to its stop with the model choosing `script` in order whenever length control does
/// not force a token. Every choice and what [`Row::accept`] said.
fn drive(tok: &TextTokenizer, row: &mut Row<'_>, script: &[i64]) -> Vec<(Choice, Accepted)> {
    let mut script = script.iter();
    let mut steps = Vec::new();
    while row.stopped().is_none() {
        let choice = match row.forced_next().unwrap() {
            Some(token) => Choice {
                token,
                forced: true,
            },
            None => {
                let want = *script.next().expect("the script ran out");
                row.choose(&logits(tok, &[(want, 1.0)])).unwrap()
            }
        };
        steps.push((choice, row.accept(choice).unwrap()));
    }
    assert!(script.next().is_none(), "the script was not used up");
    steps
}

fn event(step: usize, kind: EventKind, text: &str) -> Event {
    Event {
        step,
        kind,
        text: text.into(),
    }
}

fn cat(parts: &[&[i64]]) -> Vec<i64> {
    parts.concat()
}

#[test]
fn the_budget_closes_thinking_at_exactly_n_tokens_and_forces_the_tag_and_cue() {
    let tok = tokenizer();
    let mut cfg = config(30);
    cfg.length.think_budget = Some(3);
    cfg.length.answer_cue = "<answer>".into();
    let mut row = Row::new(&tok, &cfg, &[EOS], &[1, 2, 3]);
    let steps = drive(&tok, &mut row, &[A, B, C, D, E, EOS]);
    let g = row.finish().unwrap();
    assert_eq!(
        g.generated_ids,
        cat(&[&[A, B, C], &CLOSE, &ANSWER, &[D, E, EOS]])
    );
    let forced: Vec<bool> = (0..16).map(|i| (3..13).contains(&i)).collect();
    assert_eq!(g.forced, forced);
    assert_eq!(
        g.events,
        [event(3, EventKind::ForcedThinkEnd, "</think><answer>")]
    );
    // the answer starts after the tag's last token (index 8); the cue belongs to the answer
    let starts: Vec<_> = steps.iter().map(|(_, a)| a.answer_start).collect();
    assert_eq!(starts[8], Some(9));
    assert_eq!(starts.iter().flatten().count(), 1);
    assert_eq!((g.answer_start, g.think_tokens, g.answer_tokens), (9, 3, 2));
    assert_eq!(g.stop_reason, StopReason::Eos);
    assert_eq!(g.text, "a b c</think><answer> d e");
    assert_eq!((g.thinking.as_str(), g.answer.as_str()), ("a b c", "d e"));
}

#[test]
fn a_zero_budget_answers_at_once() {
    let tok = tokenizer();
    let mut cfg = config(30);
    cfg.length.think_budget = Some(0);
    let mut row = Row::new(&tok, &cfg, &[EOS], &[]);
    drive(&tok, &mut row, &[D, EOS]);
    let g = row.finish().unwrap();
    assert_eq!(g.generated_ids, cat(&[&CLOSE, &[D, EOS]]));
    assert_eq!(g.events, [event(0, EventKind::ForcedThinkEnd, "</think>")]);
    assert_eq!((g.answer_start, g.think_tokens, g.answer_tokens), (6, 0, 1));
}

#[test]
fn min_think_rolls_back_an_early_close_and_inserts_the_continuation() {
    let tok = tokenizer();
    let mut cfg = config(40);
    cfg.length.min_think = Some(4);
    cfg.length.continuation = "Wait".into();
    let mut row = Row::new(&tok, &cfg, &[EOS], &[1, 2, 3]);
    // the model closes after 2 thinking tokens, then (after the continuation) after 4
    let script = cat(&[&[A, B], &CLOSE, &[C, D], &CLOSE, &[E, EOS]]);
    let steps = drive(&tok, &mut row, &script);
    let rollbacks: Vec<_> = steps
        .iter()
        .enumerate()
        .filter(|(_, (_, a))| matches!(a.next, Next::RollBack { .. }))
        .map(|(i, (_, a))| (i, a.next))
        .collect();
    // the 8th token completed the early tag starting at index 2: keep a, b
    assert_eq!(rollbacks, [(7, Next::RollBack { keep: 2 })]);
    let inserted: Vec<_> = steps[8..11].iter().map(|(c, _)| *c).collect();
    let forced_wait: Vec<_> = SPACE_WAIT
        .iter()
        .map(|&token| Choice {
            token,
            forced: true,
        })
        .collect();
    assert_eq!(inserted, forced_wait);
    let g = row.finish().unwrap();
    assert_eq!(
        g.generated_ids,
        cat(&[&[A, B], &SPACE_WAIT, &[C, D], &CLOSE, &[E, EOS]])
    );
    let forced: Vec<bool> = (0..15).map(|i| (2..5).contains(&i)).collect();
    assert_eq!(g.forced, forced);
    assert_eq!(
        g.events,
        [
            event(2, EventKind::Wait, "Wait"),
            event(7, EventKind::ThinkEnd, "</think>")
        ]
    );
    assert_eq!(
        (g.answer_start, g.think_tokens, g.answer_tokens),
        (13, 4, 1)
    );
    assert_eq!(g.text, "a b Wait c d</think> e");
    assert_eq!(
        (g.thinking.as_str(), g.answer.as_str()),
        ("a b Wait c d", "e")
    );
}

#[test]
fn waits_reopen_thinking_k_times_at_an_end_of_sequence_or_a_close_tag() {
    let tok = tokenizer();
    let mut cfg = config(40);
    cfg.length.waits = 2;
    cfg.length.wait_text = "again".into();
    let mut row = Row::new(&tok, &cfg, &[EOS], &[]);
    let script = cat(&[&[A, EOS, B], &CLOSE, &[C], &CLOSE, &[D, EOS]]);
    let steps = drive(&tok, &mut row, &script);
    let rollbacks: Vec<_> = steps
        .iter()
        .filter_map(|(_, a)| match a.next {
            Next::RollBack { keep } => Some(keep),
            _ => None,
        })
        .collect();
    // the end of sequence after `a` (keep a), then the tag after ` b` (keep a, again, b)
    assert_eq!(rollbacks, [1, 3]);
    let g = row.finish().unwrap();
    assert_eq!(
        g.generated_ids,
        cat(&[&[A, AGAIN, B, AGAIN, C], &CLOSE, &[D, EOS]])
    );
    let forced: Vec<bool> = (0..13).map(|i| i == 1 || i == 3).collect();
    assert_eq!(g.forced, forced);
    assert_eq!(
        g.events,
        [
            event(1, EventKind::Wait, "again"),
            event(3, EventKind::Wait, "again"),
            event(5, EventKind::ThinkEnd, "</think>")
        ]
    );
    assert_eq!(
        (g.answer_start, g.think_tokens, g.answer_tokens),
        (11, 3, 1)
    );
    assert_eq!(g.stop_reason, StopReason::Eos);
    assert_eq!(g.text, "a again b again c</think> d");
}

#[test]
fn end_of_sequence_is_banned_below_min_new_tokens() {
    let tok = tokenizer();
    let mut cfg = config(10);
    cfg.min_new_tokens = 2;
    let mut row = Row::new(&tok, &cfg, &[EOS], &[]);
    // the model prefers the end of sequence, then `a`
    let prefers_eos = logits(&tok, &[(EOS, 2.0), (A, 1.0)]);
    let mut chosen = Vec::new();
    while row.stopped().is_none() {
        let c = row.choose(&prefers_eos).unwrap();
        assert!(!c.forced);
        chosen.push((c.token, row.accept(c).unwrap().next));
    }
    assert_eq!(
        chosen,
        [
            (A, Next::Continue),
            (A, Next::Continue),
            (EOS, Next::Stop(StopReason::Eos))
        ]
    );
    let g = row.finish().unwrap();
    assert_eq!((g.think_tokens, g.answer_tokens), (3, 0));
    assert!(g.events.is_empty());
}

#[test]
fn generation_stops_at_max_new_tokens() {
    let tok = tokenizer();
    let cfg = config(3);
    let mut row = Row::new(&tok, &cfg, &[EOS], &[]);
    let steps = drive(&tok, &mut row, &[A, B, C]);
    let next: Vec<_> = steps.iter().map(|(_, a)| a.next).collect();
    assert_eq!(
        next,
        [
            Next::Continue,
            Next::Continue,
            Next::Stop(StopReason::MaxNewTokens)
        ]
    );
    assert!(row
        .accept(Choice {
            token: D,
            forced: false
        })
        .is_err());
    let g = row.finish().unwrap();
    assert_eq!(
        (g.answer_start, g.think_tokens, g.text.as_str()),
        (3, 3, "a b c")
    );
}

#[test]
fn without_thinking_every_generated_token_is_answer() {
    let tok = tokenizer();
    let mut think = config(30);
    let mut row = Row::new(&tok, &think, &[EOS], &[1, 2]);
    drive(&tok, &mut row, &[A, B, C, EOS]);
    let g = row.finish().unwrap();
    // a model that never closes a thinking block: by default all of it (EOS too) is thinking
    assert_eq!((g.think_tokens, g.answer_tokens, g.answer_start), (4, 0, 4));
    think.no_think = true;
    let mut row = Row::new(&tok, &think, &[EOS], &[1, 2]);
    let steps = drive(&tok, &mut row, &[A, B, C, EOS]);
    let g = row.finish().unwrap();
    assert_eq!((g.think_tokens, g.answer_tokens, g.answer_start), (0, 3, 0));
    assert_eq!((g.thinking.as_str(), g.answer.as_str()), ("", "a b c"));
    // the observer hears at the first token that the answer starts at 0 (roles in traces)
    assert_eq!(steps[0].1.answer_start, Some(0));
    assert!(steps[1..].iter().all(|(_, a)| a.answer_start.is_none()));
    assert!(g.events.is_empty());
}
