//! `rhlens generate`: one answer for one image and prompt, streamed or as JSON.
use std::io::Write;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::common::{
    generate_config, InputArgs, LengthArgs, ModelArgs, NameArg, SamplingArgs, WaitsArg,
};
use crate::generate::Generator;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub name: NameArg,
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub length: LengthArgs,
    #[command(flatten)]
    pub waits: WaitsArg,
    /// Print one JSON object instead of streaming text: the input (model, image, prompt, system,
    /// settings) and the generation (text, thinking, answer, generated_ids, think_tokens,
    /// answer_tokens, stop_reason, events, timing); a line of it is a record `rhlens direction
    /// --generations` reads
    #[arg(long)]
    pub json: bool,
    /// No streamed text: the whole text is printed once at the end (unless --json); warnings still
    /// print on stderr
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let mut cfg = generate_config(&args.sampling, &args.length);
    cfg.length.waits = args.waits.waits;
    cfg.validate()?;
    let rt = args.model.load_named(&args.name)?;
    if let Some(note) = rt.random_weights_note() {
        eprintln!("{note}");
    }
    // the question as asked: with the prompt preset appended
    let question = args.input.question();
    let texts = [args.input.system.as_deref(), Some(question.as_str())];
    args.length.settle_thinking(&rt, &mut cfg, &texts, false)?;
    let image = args.input.image_path();
    let prompt = rt.prepare(&image, &question, args.input.system.as_deref())?;
    let generator = Generator::new(&rt.model, &rt.tokenizer);
    let ids = generator.prompt_ids(&prompt.input_ids, &cfg)?;
    let stream = !args.json && !args.quiet;
    let mut out = std::io::stdout();
    let mut on_text = |s: &str| {
        if stream {
            let _ = out.write_all(s.as_bytes());
            let _ = out.flush();
        }
    };
    let g = generator.run(
        &ids,
        &[prompt.image.input()],
        &cfg,
        Default::default(),
        &mut on_text,
    )?;
    if let Some(w) = g.unmet_waits(&cfg) {
        super::flags::warn(&w);
    }
    if args.json {
        let v = json!({
            "model": rt.name,
            "image": image.to_string_lossy(),
            "prompt": question,
            "prompt_style": args.input.style.prompt_style.name(),
            "system": args.input.system,
            "settings": cfg,
            "text": g.text,
            "thinking": g.thinking,
            "answer": g.answer,
            "generated_ids": g.generated_ids,
            "think_tokens": g.think_tokens,
            "answer_tokens": g.answer_tokens,
            "stop_reason": g.stop_reason.as_str(),
            "events": g.events,
            "prompt_tokens": ids.len(),
            "random_weights": rt.config.random_weights,
            "timing": {
                "prefill_ms": g.timing.prefill_ms,
                "decode_ms": g.timing.decode_ms,
                "decode_steps": g.timing.decode_steps,
                "decode_tokens_per_s": g.timing.decode_tokens_per_s(),
            },
            "peak_rss_mib": crate::peak_rss_mib(),
        });
        println!("{}", serde_json::to_string(&v)?);
    } else if stream {
        println!();
        eprintln!(
            "[{} tokens: {} thinking, {} answer; stopped by {}]",
            g.generated_ids.len(),
            g.think_tokens,
            g.answer_tokens,
            g.stop_reason.as_str()
        );
    } else {
        println!("{}", g.text);
    }
    Ok(())
}
