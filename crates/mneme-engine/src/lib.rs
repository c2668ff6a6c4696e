//! Mneme's embeddable engine.
mod clock;
mod codec;
pub mod embed;
mod error;
mod ids;
pub mod limits;
mod model;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, Result};
pub use model::*;
