//! meshproxy's pure core (being written).
#![forbid(unsafe_code)]

pub mod directory;
pub mod http_connect;
pub mod ids;
pub mod policy;
pub mod record;
pub mod selection;
pub mod socks;
pub mod target;
pub mod time;
pub mod wire;
