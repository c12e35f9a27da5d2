//! Test support shared by `tower-sse`'s unit tests, integration tests, benches and fuzz targets.
//!
//! Not published. The reference parser depends on nothing but `std`.

pub mod sse_parser;
