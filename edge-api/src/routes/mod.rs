//! One file per resource of `/api/v1`: each route's handler parses the request, calls core and
//! the objects' clients, and renders the answer. The router picks the handler.

pub mod agents;
pub mod ctx;
pub mod inspect;
pub mod runs;
pub mod schedules;
pub mod templates;
pub mod tokens;
pub mod triggers;
