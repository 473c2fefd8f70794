//! `meshproxy`: the node's command line.
#![forbid(unsafe_code)]

fn main() {}
