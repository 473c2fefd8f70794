//! meshproxy simulator (being written).
#![forbid(unsafe_code)]
