//! The client commands, one module per area.

pub mod catalog;
pub mod deploy;
pub mod identity;
pub mod logs;
pub mod rules;
pub mod services;
pub mod session;
pub mod variables;
