//! The `modelc` command-line tool.

fn main() {}
