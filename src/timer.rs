//! Timers re-armed lazily: [`SharedTimer`], a stream's slot in its runtime's timer wheel
//! (`wheel`), used by the event stream's body, the slow-client pump and the resume body.
//!
//! Traffic only moves instants in the caller's state; the timer is not touched per frame. It is
//! moved earlier when a nearer deadline appears, and when it fires early (the deadline it was set
//! for has since moved later), the caller acts on what is due and the next poll re-arms it for
//! what is left. tower-http's `TimeoutBody`, by contrast, makes a new `Sleep` per frame.

mod wheel;
#[cfg(test)]
pub(crate) use wheel::SLOT_SIZE;
pub(crate) use wheel::SharedTimer;
