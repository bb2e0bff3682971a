//! Named capture sites: an observer sees exactly the sites it wants, a pattern computed from the
//! attention inputs matches the model's eager probabilities, and `rhlens dump --capture` saves the
//! chosen sites under their names with the same values as the default dump.
mod common;

use std::collections::HashMap;
use std::process::Command;

use common::*;
use rhlens::model::{AttnImpl, Captured, Collector, ForwardOptions, Observer, Site};
use rhlens::runtime::Runtime;
use tch::{Device, Kind, Tensor};

fn load(model: &str) -> Runtime {
    Runtime::load(model_dir(model).to_str().unwrap(), Kind::Float, Device::Cpu).unwrap()
}

/// Records which sites were reported.
struct Seen {
    want: Vec<Site>,
    seen: Vec<Site>,
}

impl Observer for Seen {
    fn wants(&self, site: Site) -> bool {
        self.want.contains(&site)
    }

    fn on_capture(&mut self, site: Site, _: Captured<'_>) {
        self.seen.push(site);
    }
}

#[test]
fn an_observer_sees_only_the_sites_it_wants() {
    let rt = load("tiny-flat");
    let p = rt
        .prepare(&image_path("wide"), "What is here?", None)
        .unwrap();
    // in the order of the forward pass
    let want = vec![
        Site::VisionAttnReceived(1),
        Site::ResidPostAttn(0),
        Site::AttnPattern(2),
    ];
    let mut obs = Seen {
        want: want.clone(),
        seen: Vec::new(),
    };
    let opts = ForwardOptions {
        observer: Some(&mut obs),
        ..Default::default()
    };
    let (_, mut seq) = rt
        .model
        .prefill(&p.input_ids, &[p.image.input()], 0, opts)
        .unwrap();
    assert_eq!(obs.seen, want);
    // a decode step reports the decoder's sites again, never the vision tower's
    obs.seen.clear();
    let opts = ForwardOptions {
        observer: Some(&mut obs),
        ..Default::default()
    };
    let _ = rt.model.step(&mut seq, 1, opts).unwrap();
    assert_eq!(obs.seen, [Site::ResidPostAttn(0), Site::AttnPattern(2)]);
}

#[test]
fn patterns_from_attention_inputs_match_the_eager_probabilities() {
    let mut rt = load("tiny-nested");
    let p = rt
        .prepare(&image_path("tall"), "What is here?", None)
        .unwrap();
    let images = [p.image.input()];
    let mut patterns = |attn: AttnImpl| {
        rt.model.attn_impl = attn;
        let mut c = Collector::new(vec!["blocks.*.attn.pattern".parse().unwrap()]);
        let opts = ForwardOptions {
            observer: Some(&mut c),
            ..Default::default()
        };
        let _ = rt.model.prefill(&p.input_ids, &images, 0, opts).unwrap();
        c.into_values()
    };
    // the fused path returns no probabilities: the collector computes them from q, K and the scale
    let fused = patterns(AttnImpl::Sdpa);
    let eager = patterns(AttnImpl::Eager);
    assert_eq!(fused.len(), rt.model.num_layers());
    for (site, f) in &fused {
        let d = max_abs_diff(f, &eager[site]);
        assert!(d <= 1e-5, "{site}: fused and eager patterns differ by {d}");
    }
}

fn dump(args: &[&str], out: &std::path::Path) -> std::process::Output {
    let model = model_dir("tiny-flat");
    let img = image_path("wide");
    let mut cmd = Command::new(bin());
    cmd.args(["dump", "--model", model.to_str().unwrap()])
        .args([
            "--image",
            img.to_str().unwrap(),
            "--prompt",
            "What is here?",
        ])
        .args(["--device", "cpu", "--out", out.to_str().unwrap()])
        .args(args);
    cmd.output().unwrap()
}

fn read(path: &std::path::Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .collect()
}

#[test]
fn dump_capture_saves_the_chosen_sites_under_their_names() {
    let dir = tempfile::tempdir().unwrap();
    let default = dir.path().join("default.safetensors");
    let chosen = dir.path().join("chosen.safetensors");
    assert!(dump(&[], &default).status.success());
    let o = dump(
        &[
            "--capture",
            "blocks.*.attn.pattern",
            "--capture",
            "embed,vision.merged,blocks.1-2.resid_post_attn",
        ],
        &chosen,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (d, c) = (read(&default), read(&chosen));
    let mut names: Vec<&str> = c.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "blocks.0.attn.pattern",
            "blocks.1.attn.pattern",
            "blocks.1.resid_post_attn",
            "blocks.2.attn.pattern",
            "blocks.2.resid_post_attn",
            "embed",
            "image_grid_thw",
            "input_ids",
            "logits",
            "pixel_values",
            "position_ids",
            "rope_deltas",
            "vision.merged",
        ]
    );
    for l in 0..3 {
        let site = format!("blocks.{l}.attn.pattern");
        assert!(c[&site].equal(&d[&format!("attentions.{l}")]), "{site}");
    }
    assert!(c["embed"].equal(&d["hidden_states.0"]));
    assert!(c["vision.merged"].equal(&d["image_embeds"]));
    assert!(c["logits"].equal(&d["logits"]));
}

#[test]
fn dump_refuses_a_pattern_that_selects_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.safetensors");
    // a misspelt site is a usage error
    let o = dump(&["--capture", "blocks.*.attn.patern"], &out);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("selects no capture site"), "{err}");
    assert!(err.contains("blocks.{l}.resid_post_attn"), "{err}");
    // a layer this model does not have
    let o = dump(&["--capture", "blocks.7.resid_post"], &out);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("3 decoder layers"), "{err}");
    assert!(!out.exists());
}
