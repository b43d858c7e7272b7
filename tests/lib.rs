#![forbid(unsafe_code)]
//! End-to-end tests across Slipway services live in `tests/`; this crate has no code.
