//! On-disk schemas, model-free: what rhlens writes and reads back (traces, token roles, sweep
//! summaries) and the role-share reductions over saved traces. Everything here is plain data and
//! file I/O, so `render` and `bench` can read saved runs without libtorch.
pub mod diff;
pub mod evidence;
pub mod roles;
pub mod shares;
pub mod spatial;
pub mod sweep;
pub mod trace;

pub use roles::{Role, RoleSpan, ROLE_NAMES};
