//! Where each decoder layer looks, per role and per image token, at every generated step.
pub mod capture;
pub mod dependence;
pub mod layers;
pub mod record;
pub mod roles;
pub mod run;

pub use capture::{Probe, ProbeArrays, ProbeConfig, VisionProbe};
pub use roles::{prompt_roles, role_spans};
pub use run::{prompt_allocation, traced_generation, TraceRequest, TracedRun};
