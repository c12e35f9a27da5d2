//! Test support for the unit tests, from the `tower-sse-test-support` crate: the reference SSE
//! parser, a scripted mock body and small helpers.
//!
//! Only items that do not involve `tower-sse`'s own types: the support crate links another
//! copy of this crate, whose types differ from `crate::` ones in a unit test.

pub(crate) use tower_sse_test_support::script_body::{ScriptBody, Step};
pub(crate) use tower_sse_test_support::split_wrapping as split;
pub(crate) use tower_sse_test_support::{events_of, sse_parser};
