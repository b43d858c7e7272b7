//! Variables as a service sees them: the domain rules for scopes, kinds, secrets and
//! built-in `SLIPWAY_*` keys, free of protobuf and storage so the API, the store and the
//! environment snapshot all share one definition of "the effective variables".
//!
//! - [`validate`]: what a user may write (key names, file paths, kind-specific fields,
//!   consistency with the other variables of a scope chain);
//! - [`builtin_variables`]: the `SLIPWAY_*` keys Slipway gives every service;
//! - [`resolve`]: narrowest scope wins, overrides, aliases, secrets carried through.

mod builtin;
mod resolve;
mod validate;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use builtin::{BuiltinContext, PeerService, builtin_variables, env_name_part};
pub use resolve::{MAX_ALIAS_DEPTH, ResolveError, orphan_overrides, resolve};
pub use validate::{
    ChainError, DefinitionError, FilePathError, KeyError, MAX_FILE_LEN, MAX_FILE_PATH_LEN,
    MAX_KEY_LEN, MAX_VALUE_LEN, RESERVED_PREFIX, check_in_chain, validate_alias_target,
    validate_builtin_key, validate_file_path, validate_key,
};

/// Where a variable is defined. The order is the precedence: a narrower scope (greater
/// in `Ord`) wins over a wider one, so `BuiltIn < Project < Environment < Service`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Set by Slipway itself (`SLIPWAY_*` keys).
    BuiltIn,
    /// Defined on the project: every service of every environment of it.
    Project,
    /// Defined on the environment: every service of it.
    Environment,
    /// Defined on one service.
    Service,
}

/// What a variable does; mirrors `slipway.catalog.v1.VariableKind` without the
/// unspecified value, which the API refuses before it gets here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum VariableKind {
    /// Defines `key` with `value`.
    Value,
    /// Defines `key` as a copy of `alias_target`'s effective value.
    Alias,
    /// Gives a new `value` to a key defined at a wider scope.
    Override,
    /// Mounts `value` as a file at `file_path`; the environment variable holds the path.
    File,
}

/// One stored variable, in the shape resolution needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VariableDef {
    /// Id of the Variable; empty for built-ins (the API shows them without one).
    pub id: String,
    /// Where it is defined.
    pub scope: Scope,
    /// Environment variable name (for an alias, the new name).
    pub key: String,
    /// What it does.
    pub kind: VariableKind,
    /// The value for VALUE and OVERRIDE, the file content for FILE, empty for ALIAS.
    pub value: String,
    /// Whether the value is a secret.
    pub is_secret: bool,
    /// For FILE, the absolute path the content is mounted at; `None` otherwise.
    pub file_path: Option<String>,
    /// For ALIAS, the key it copies; `None` otherwise. A field of its own (not `value`)
    /// because the proto and the table keep it apart too.
    pub alias_target: Option<String>,
}

impl VariableDef {
    fn plain(id: &str, scope: Scope, key: &str, kind: VariableKind, value: &str) -> Self {
        Self {
            id: id.to_owned(),
            scope,
            key: key.to_owned(),
            kind,
            value: value.to_owned(),
            is_secret: false,
            file_path: None,
            alias_target: None,
        }
    }

    /// A VALUE variable.
    pub fn new_value(id: &str, scope: Scope, key: &str, value: &str) -> Self {
        Self::plain(id, scope, key, VariableKind::Value, value)
    }

    /// An OVERRIDE variable.
    pub fn new_override(id: &str, scope: Scope, key: &str, value: &str) -> Self {
        Self::plain(id, scope, key, VariableKind::Override, value)
    }

    /// An ALIAS variable: `key` copies `target`.
    pub fn new_alias(id: &str, scope: Scope, key: &str, target: &str) -> Self {
        Self {
            alias_target: Some(target.to_owned()),
            ..Self::plain(id, scope, key, VariableKind::Alias, "")
        }
    }

    /// A FILE variable: `content` mounted at `path`.
    pub fn new_file(id: &str, scope: Scope, key: &str, path: &str, content: &str) -> Self {
        Self {
            file_path: Some(path.to_owned()),
            ..Self::plain(id, scope, key, VariableKind::File, content)
        }
    }

    /// A built-in VALUE variable. The only constructor that is meant for `SLIPWAY_` keys:
    /// users may not create them, Slipway must ([`validate_builtin_key`] checks it).
    pub fn builtin(key: &str, value: &str) -> Self {
        Self::plain("", Scope::BuiltIn, key, VariableKind::Value, value)
    }

    /// The same variable marked secret.
    #[must_use]
    pub fn secret(mut self) -> Self {
        self.is_secret = true;
        self
    }

    /// Whether this variable defines its key (VALUE, FILE, ALIAS) rather than
    /// changing a wider definition (OVERRIDE).
    pub fn is_definition(&self) -> bool {
        self.kind != VariableKind::Override
    }
}

/// The variable that decided an effective value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Scope of that variable.
    pub scope: Scope,
    /// Its id; empty for built-ins.
    pub variable_id: String,
    /// Its kind: the narrowest OVERRIDE, else the definition (for an alias, the ALIAS).
    pub kind: VariableKind,
    /// For an alias, the key it copies (the direct target, not the end of a chain).
    pub via_alias_of: Option<String>,
}

/// One variable as the service will see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectiveVariable {
    /// Environment variable name.
    pub key: String,
    /// The resolved value; for a file, its content (the environment variable then holds
    /// `file_path`).
    pub value: String,
    /// Whether the value is a secret: set when the definition, any override of it, or
    /// (for an alias) anything along the alias chain is secret.
    pub is_secret: bool,
    /// For a file, where it is mounted.
    pub file_path: Option<String>,
    /// Where the value comes from.
    pub source: Source,
}

impl EffectiveVariable {
    /// What the process environment holds for this key: the mount path for a file,
    /// else the value. An alias copies this, so `CONFIG_PATH` aliasing a file gets the
    /// path, not the file's content.
    pub fn env_value(&self) -> &str {
        self.file_path.as_deref().unwrap_or(&self.value)
    }
}
