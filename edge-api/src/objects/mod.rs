//! The Durable Objects, one folder each. Each folder's `api` module is what the rest of the
//! edge may know of the object (its messages and typed client); objects call each other only
//! through those.

pub mod catalog;
pub mod queue;
pub mod run;
