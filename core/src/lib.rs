//! Concurrent's shared core: what the designer, the edge API and the dispatcher agree on.
//!
//! Everything here is pure (no I/O, no clocks, no randomness) so it compiles to native and to
//! wasm32 and can be tested exhaustively. Time always comes in as an argument (milliseconds since
//! the Unix epoch).

pub mod access;
pub mod cache;
pub mod concurrency_limit;
pub mod design;
pub mod diff;
pub mod env_cache;
pub mod expr;
pub mod jwt;
pub mod kubernetes;
pub mod lease;
pub mod logtail;
pub mod logview;
pub mod mask;
pub mod names;
pub mod params;
pub mod partition;
pub mod project;
pub mod refs;
pub mod run;
pub mod schedule;
pub mod sign;
pub mod step_token;
pub mod sweep;
pub mod template;
pub mod time;
pub mod trigger;
pub mod validate;
pub mod wire;

pub use template::Template;
pub use validate::{unknown_fields, validate, Problem, Target};
