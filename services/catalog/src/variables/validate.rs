//! What a user may write. These run before anything is stored, so every refusal is a
//! `BadRequest` field violation (or `FAILED_PRECONDITION` for [`ChainError`]) with a
//! message fit to show people: lowercase, naming what is wrong.

use thiserror::Error;

use super::{Scope, VariableDef, VariableKind};

/// Keys starting with this (in any case) are Slipway's own.
pub const RESERVED_PREFIX: &str = "SLIPWAY_";
/// Longest key, in characters (all ASCII, so also bytes).
pub const MAX_KEY_LEN: usize = 255;
/// Longest file mount path, in bytes. The API contract (`Variable.file_mount_path`)
/// says 1024; Linux would take 4096, but the contract is what clients were promised.
pub const MAX_FILE_PATH_LEN: usize = 1024;
/// Largest VALUE or OVERRIDE value, in bytes (64 KiB).
pub const MAX_VALUE_LEN: usize = 64 * 1024;
/// Largest FILE content, in bytes (512 KiB).
pub const MAX_FILE_LEN: usize = 512 * 1024;

/// Why a key is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    /// No key at all.
    #[error("key is empty")]
    Empty,
    /// Over [`MAX_KEY_LEN`].
    #[error("key is {len} characters long, at most {MAX_KEY_LEN} are allowed")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// Starts with a digit or something else than a letter or `_`.
    #[error("key must start with a letter or '_', not {ch:?}")]
    InvalidFirstChar {
        /// The first character.
        ch: char,
    },
    /// Holds a character outside `[A-Za-z0-9_]`.
    #[error("key may hold only letters, digits and '_', not {ch:?} (at position {index})")]
    InvalidChar {
        /// The character.
        ch: char,
        /// Its position, in characters from 0.
        index: usize,
    },
    /// Uses the reserved prefix.
    #[error("keys starting with {RESERVED_PREFIX:?} are reserved for built-in variables")]
    Reserved,
    /// A built-in key without the reserved prefix (a bug in Slipway, not user input).
    #[error("built-in keys must start with {RESERVED_PREFIX:?}")]
    NotReserved,
}

/// Why a file mount path is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FilePathError {
    /// No path.
    #[error("file mount path is empty")]
    Empty,
    /// Relative: the mount point would depend on the image's working directory.
    #[error("file mount path must be absolute (start with '/')")]
    NotAbsolute,
    /// Over [`MAX_FILE_PATH_LEN`].
    #[error("file mount path is {len} bytes long, at most {MAX_FILE_PATH_LEN} are allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// Holds a `..` component, which could climb out of where the path seems to point.
    #[error("file mount path may not contain '..'")]
    ParentComponent,
    /// Holds a NUL byte, which no file system accepts.
    #[error("file mount path may not contain a NUL character")]
    Nul,
    /// Names a directory (`/` or a trailing `/`), where a file cannot be mounted.
    #[error("file mount path must name a file, not end with '/'")]
    Directory,
}

/// Why a variable is refused on its own, before looking at the others.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DefinitionError {
    /// The key is invalid.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The FILE mount path is invalid.
    #[error(transparent)]
    FilePath(#[from] FilePathError),
    /// People cannot write built-in variables.
    #[error("built-in variables cannot be written")]
    BuiltInScope,
    /// An ALIAS without a target.
    #[error("an alias needs a target key")]
    MissingAliasTarget,
    /// An ALIAS whose target is not a valid key.
    #[error("alias target: {0}")]
    InvalidAliasTarget(KeyError),
    /// An ALIAS of itself.
    #[error("an alias cannot copy its own key")]
    SelfAlias,
    /// A field set that the kind does not use.
    #[error("{field} must be empty for a variable of kind {kind:?}")]
    UnexpectedField {
        /// The field, as the API names it.
        field: &'static str,
        /// The variable's kind.
        kind: VariableKind,
    },
    /// A FILE without a mount path.
    #[error("a file variable needs a mount path")]
    MissingFilePath,
    /// An ALIAS marked secret: it is exactly as secret as its target, so the flag would
    /// only mislead.
    #[error("an alias cannot be marked secret; it is secret when its target is")]
    SecretAlias,
    /// A value over the size limit of its kind.
    #[error("value is {len} bytes long, at most {max} are allowed")]
    ValueTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit for this kind.
        max: usize,
    },
}

/// Why a variable is refused given the other variables along its scope chain.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChainError {
    /// Another variable of the same scope has this key.
    #[error("key {key} is already used in this scope")]
    AlreadyInScope {
        /// The key.
        key: String,
    },
    /// The key is already defined at another scope of the chain: a narrower scope must
    /// use an OVERRIDE, and a wider one cannot define what a narrower one already does.
    #[error("key {key} is already defined at {scope:?} scope; use an override instead")]
    DefinedElsewhere {
        /// The key.
        key: String,
        /// Where it is defined.
        scope: Scope,
    },
    /// An OVERRIDE with nothing wider to override.
    #[error("key {key} is not defined at a wider scope, so there is nothing to override")]
    OverrideWithoutDefinition {
        /// The key.
        key: String,
    },
    /// An OVERRIDE of an alias: an alias has no value of its own to replace.
    #[error("key {key} is an alias at {scope:?} scope and cannot be overridden")]
    OverrideOfAlias {
        /// The key.
        key: String,
        /// Where the alias is defined.
        scope: Scope,
    },
    /// A plain OVERRIDE of a secret would publish what the definition keeps secret.
    #[error("key {key} is secret, so its override must be secret too")]
    OverrideMustBeSecret {
        /// The key.
        key: String,
    },
    /// An ALIAS of a key not defined at its scope or a wider one.
    #[error("alias target {target} is not defined at this scope or a wider one")]
    AliasTargetNotFound {
        /// The target key.
        target: String,
    },
    /// An ALIAS of an alias: refused on write to keep chains one step long.
    #[error("alias target {target} is itself an alias")]
    AliasOfAlias {
        /// The target key.
        target: String,
    },
}

/// Checks the common environment-variable name rule: `[A-Za-z_][A-Za-z0-9_]*`, at most
/// [`MAX_KEY_LEN`] characters.
fn validate_env_name(key: &str) -> Result<(), KeyError> {
    let mut chars = key.chars();
    let Some(first) = chars.next() else {
        return Err(KeyError::Empty);
    };
    if !(first.is_ascii_alphabetic() || first == '_') {
        return Err(KeyError::InvalidFirstChar { ch: first });
    }
    for (index, ch) in key.chars().enumerate().skip(1) {
        if !(ch.is_ascii_alphanumeric() || ch == '_') {
            return Err(KeyError::InvalidChar { ch, index });
        }
    }
    // Checked after the characters so the length is in characters (all ASCII here).
    if key.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong { len: key.len() });
    }
    Ok(())
}

fn has_reserved_prefix(key: &str) -> bool {
    key.get(..RESERVED_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_PREFIX))
}

/// Checks a key people write: a valid environment-variable name not using the reserved
/// `SLIPWAY_` prefix in any case (`slipway_x` would shadow `SLIPWAY_X` on systems that
/// fold case, and confuses people anyway).
pub fn validate_key(key: &str) -> Result<(), KeyError> {
    validate_env_name(key)?;
    if has_reserved_prefix(key) {
        return Err(KeyError::Reserved);
    }
    Ok(())
}

/// Checks a built-in key: a valid name that does start with `SLIPWAY_`.
pub fn validate_builtin_key(key: &str) -> Result<(), KeyError> {
    validate_env_name(key)?;
    if !key.starts_with(RESERVED_PREFIX) {
        return Err(KeyError::NotReserved);
    }
    Ok(())
}

/// Checks an alias target: any valid name, built-in `SLIPWAY_` keys included, since
/// aliasing them (`DATABASE_URL` from `SLIPWAY_POSTGRES_URL`) is the point of aliases.
pub fn validate_alias_target(key: &str) -> Result<(), KeyError> {
    validate_env_name(key)
}

/// Checks a FILE mount path: absolute, naming a file, no `..` component, no NUL, at most
/// [`MAX_FILE_PATH_LEN`] bytes.
pub fn validate_file_path(path: &str) -> Result<(), FilePathError> {
    if path.is_empty() {
        return Err(FilePathError::Empty);
    }
    if path.len() > MAX_FILE_PATH_LEN {
        return Err(FilePathError::TooLong { len: path.len() });
    }
    if !path.starts_with('/') {
        return Err(FilePathError::NotAbsolute);
    }
    if path.contains('\0') {
        return Err(FilePathError::Nul);
    }
    if path.split('/').any(|c| c == "..") {
        return Err(FilePathError::ParentComponent);
    }
    if path.ends_with('/') {
        return Err(FilePathError::Directory);
    }
    Ok(())
}

impl VariableDef {
    /// Checks a variable people write, on its own: scope, key, and the fields its kind
    /// uses (and only those).
    pub fn validate(&self) -> Result<(), DefinitionError> {
        if self.scope == Scope::BuiltIn {
            return Err(DefinitionError::BuiltInScope);
        }
        validate_key(&self.key)?;
        let unexpected = |field| DefinitionError::UnexpectedField {
            field,
            kind: self.kind,
        };
        match self.kind {
            VariableKind::Alias => {
                let target = self
                    .alias_target
                    .as_deref()
                    .filter(|t| !t.is_empty())
                    .ok_or(DefinitionError::MissingAliasTarget)?;
                validate_alias_target(target).map_err(DefinitionError::InvalidAliasTarget)?;
                if target == self.key {
                    return Err(DefinitionError::SelfAlias);
                }
                if !self.value.is_empty() {
                    return Err(unexpected("value"));
                }
                if self.file_path.is_some() {
                    return Err(unexpected("file_mount_path"));
                }
                if self.is_secret {
                    return Err(DefinitionError::SecretAlias);
                }
            }
            VariableKind::Value | VariableKind::Override => {
                if self.alias_target.is_some() {
                    return Err(unexpected("alias_target_key"));
                }
                if self.file_path.is_some() {
                    return Err(unexpected("file_mount_path"));
                }
                check_len(&self.value, MAX_VALUE_LEN)?;
            }
            VariableKind::File => {
                if self.alias_target.is_some() {
                    return Err(unexpected("alias_target_key"));
                }
                let path = self
                    .file_path
                    .as_deref()
                    .ok_or(DefinitionError::MissingFilePath)?;
                validate_file_path(path)?;
                check_len(&self.value, MAX_FILE_LEN)?;
            }
        }
        Ok(())
    }
}

fn check_len(value: &str, max: usize) -> Result<(), DefinitionError> {
    if value.len() > max {
        return Err(DefinitionError::ValueTooLong {
            len: value.len(),
            max,
        });
    }
    Ok(())
}

/// Checks `new` against the variables of the scopes it is visible from or to (for a
/// service: its service, environment and project variables and the built-ins; for a
/// wider scope, the variables of that key below it too), so that the stored set keeps
/// the invariants [`super::resolve`] relies on: a key is defined at most once along a
/// chain, an override always has a wider VALUE or FILE to change (secret if that is),
/// and an alias copies a non-alias key defined at its scope or wider.
///
/// `chain` may contain `new` itself (an update): a variable with the same non-empty id
/// is ignored.
pub fn check_in_chain(chain: &[VariableDef], new: &VariableDef) -> Result<(), ChainError> {
    let others = || {
        chain
            .iter()
            .filter(move |v| new.id.is_empty() || v.id != new.id)
    };
    let same_key = || others().filter(|v| v.key == new.key);
    if same_key().any(|v| v.scope == new.scope) {
        return Err(ChainError::AlreadyInScope {
            key: new.key.clone(),
        });
    }
    if new.is_definition() {
        if let Some(def) = same_key().find(|v| v.is_definition()) {
            return Err(ChainError::DefinedElsewhere {
                key: new.key.clone(),
                scope: def.scope,
            });
        }
    } else {
        let def = same_key()
            .filter(|v| v.is_definition() && v.scope < new.scope)
            .max_by_key(|v| v.scope)
            .ok_or_else(|| ChainError::OverrideWithoutDefinition {
                key: new.key.clone(),
            })?;
        if def.kind == VariableKind::Alias {
            return Err(ChainError::OverrideOfAlias {
                key: new.key.clone(),
                scope: def.scope,
            });
        }
        if def.is_secret && !new.is_secret {
            return Err(ChainError::OverrideMustBeSecret {
                key: new.key.clone(),
            });
        }
    }
    if let Some(target) = new.alias_target.as_deref() {
        let def = others()
            .filter(|v| v.key == target && v.is_definition() && v.scope <= new.scope)
            .max_by_key(|v| v.scope)
            .ok_or_else(|| ChainError::AliasTargetNotFound {
                target: target.to_owned(),
            })?;
        if def.kind == VariableKind::Alias {
            return Err(ChainError::AliasOfAlias {
                target: target.to_owned(),
            });
        }
    }
    Ok(())
}
