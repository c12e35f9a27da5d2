//! Fleet evidence for tower-sse: what jittered `retry:` hints, a drain spread over a window,
//! jittered lifetimes and upstream resume do to reconnect storms across many instances.
//!
//! - [`sim`]: a discrete-event simulation of instances × clients behind a round-robin load
//!   balancer (20 × 100,000 in seconds);
//! - [`series`]: reconnects per 100 ms bucket, as CSV, and their peaks;
//! - the binary's subcommands: `simulate`, `load` (a spec-following SSE load client), `app` (a
//!   small SSE app serving one event log from a Redis Stream) and `plot`.
//!
//! See FLEET.md at the repository root for the deployment shape, the settings and the figures.

pub mod app;
pub mod load;
pub mod plot;
pub mod series;
pub mod sim;
pub mod simulate;
