//! `tower-sse-fleet`: the simulation, the load client, the Redis-backed SSE app and the plots.

fn main() {}
