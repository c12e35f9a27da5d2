//! The integration tests' support, from the `tower-sse-test-support` crate: loopback servers and
//! clients, and the reference SSE parser. Each test binary uses some of it.

#[allow(unused_imports)]
pub(crate) use tower_sse_test_support::loopback::*;
#[allow(unused_imports)]
pub(crate) use tower_sse_test_support::sse_parser;
