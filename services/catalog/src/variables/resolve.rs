//! Resolution: from the variables along one service's scope chain to what the service
//! sees.
//!
//! The rules, in order:
//! 1. per key, the narrowest *definition* (VALUE, FILE, ALIAS) wins;
//! 2. the narrowest OVERRIDE strictly narrower than that definition replaces its value
//!    (a FILE keeps its mount path); overrides at or wider than the winning definition
//!    were themselves overridden by it and are ignored;
//! 3. an OVERRIDE whose key has no definition at all is **ignored** (see
//!    [`orphan_overrides`]): the API refuses to create one, so one only exists when its
//!    definition was deleted afterwards, and a deleted project variable should not make
//!    every service of the project undeployable. Overrides never create keys;
//! 4. an ALIAS takes the *effective* value of its target as the service sees it (after
//!    rules 1-3), following chains of aliases up to [`MAX_ALIAS_DEPTH`] with cycle
//!    detection; a missing target or a cycle is an error, since silently dropping a key
//!    the application asked for would fail later and less clearly. An alias of a FILE
//!    gets the mount path (what the target's environment variable holds);
//! 5. secrecy is sticky: a value is secret when its definition, the override used, or
//!    anything along an alias chain is secret.

use std::collections::{BTreeMap, HashMap};

use thiserror::Error;

use super::{EffectiveVariable, Scope, Source, VariableDef, VariableKind};

/// Longest alias chain followed. The API keeps chains one step long; this only bounds
/// the work on data written some other way.
pub const MAX_ALIAS_DEPTH: usize = 16;

/// Why a set of variables cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ResolveError {
    /// Two variables of one scope share a key; the store's uniqueness rule prevents it.
    #[error("key {key} is defined twice at {scope:?} scope")]
    DuplicateKey {
        /// The key.
        key: String,
        /// The scope holding both.
        scope: Scope,
    },
    /// An alias copies a key the service does not have.
    #[error("alias {alias} copies {target}, which is not defined")]
    MissingAliasTarget {
        /// The alias whose target is missing (in a chain, the last alias).
        alias: String,
        /// The missing key.
        target: String,
    },
    /// Aliases copy each other in a circle.
    #[error("aliases form a cycle: {}", .cycle.join(" -> "))]
    AliasCycle {
        /// The keys of the cycle, the first repeated at the end.
        cycle: Vec<String>,
    },
    /// An alias chain longer than [`MAX_ALIAS_DEPTH`].
    #[error("alias {alias} is the start of a chain of more than {MAX_ALIAS_DEPTH} aliases")]
    AliasChainTooLong {
        /// The first alias of the chain.
        alias: String,
    },
    /// An ALIAS variable without a target (refused on write).
    #[error("alias {alias} has no target")]
    AliasWithoutTarget {
        /// The alias.
        alias: String,
    },
    /// Two effective files would be mounted at the same path.
    #[error("{first} and {second} are both mounted at {path}")]
    DuplicateMountPath {
        /// The path.
        path: String,
        /// The first key, in key order.
        first: String,
        /// The second key.
        second: String,
    },
}

/// A key after rules 1-3, before aliases are followed.
enum Entry<'a> {
    Ready(EffectiveVariable),
    Alias {
        def: &'a VariableDef,
        target: &'a str,
    },
}

/// Resolves the variables along one service's scope chain (built-ins included) into the
/// set it sees, sorted by key; see the module documentation for the rules. The result
/// does not depend on the order of `defs`.
pub fn resolve(defs: &[VariableDef]) -> Result<Vec<EffectiveVariable>, ResolveError> {
    let mut by_key: BTreeMap<&str, Vec<&VariableDef>> = BTreeMap::new();
    for def in defs {
        by_key.entry(def.key.as_str()).or_default().push(def);
    }

    let mut entries: BTreeMap<&str, Entry<'_>> = BTreeMap::new();
    for (key, mut vars) in by_key {
        vars.sort_by_key(|v| v.scope);
        if let Some(pair) = vars.windows(2).find(|w| w[0].scope == w[1].scope) {
            return Err(ResolveError::DuplicateKey {
                key: key.to_owned(),
                scope: pair[0].scope,
            });
        }
        // Sorted by scope and unique per scope, so "last" is "narrowest".
        let Some(def) = vars.iter().rev().find(|v| v.is_definition()) else {
            continue; // Only orphan overrides: rule 3.
        };
        let over = vars
            .iter()
            .rev()
            .find(|v| !v.is_definition() && v.scope > def.scope);
        let entry = match (def.kind, over) {
            (VariableKind::Alias, None) => Entry::Alias {
                def,
                target: def.alias_target.as_deref().ok_or_else(|| {
                    ResolveError::AliasWithoutTarget {
                        alias: key.to_owned(),
                    }
                })?,
            },
            // The write path refuses overriding an alias; should one exist anyway, its
            // value is the narrowest word on the key, like any override.
            (_, Some(over)) => Entry::Ready(EffectiveVariable {
                key: key.to_owned(),
                value: over.value.clone(),
                is_secret: def.is_secret || over.is_secret,
                file_path: file_path_of(def),
                source: source_of(over, None),
            }),
            (_, None) => Entry::Ready(EffectiveVariable {
                key: key.to_owned(),
                value: def.value.clone(),
                is_secret: def.is_secret,
                file_path: file_path_of(def),
                source: source_of(def, None),
            }),
        };
        entries.insert(key, entry);
    }

    let mut out = Vec::with_capacity(entries.len());
    for (key, entry) in &entries {
        match entry {
            Entry::Ready(var) => out.push(var.clone()),
            Entry::Alias { def, target } => {
                let (end, secret_on_way) = follow(&entries, key, target)?;
                out.push(EffectiveVariable {
                    key: (*key).to_owned(),
                    value: end.env_value().to_owned(),
                    is_secret: def.is_secret || secret_on_way || end.is_secret,
                    file_path: None,
                    source: source_of(def, Some(target)),
                });
            }
        }
    }

    let mut mounts: HashMap<&str, &str> = HashMap::new();
    for var in &out {
        if let Some(path) = var.file_path.as_deref()
            && let Some(first) = mounts.insert(path, &var.key)
        {
            return Err(ResolveError::DuplicateMountPath {
                path: path.to_owned(),
                first: first.to_owned(),
                second: var.key.clone(),
            });
        }
    }
    Ok(out)
}

/// Follows the alias `start` (copying `target`) to a non-alias entry; returns it and
/// whether an alias passed on the way was marked secret.
fn follow<'e, 'd: 'e>(
    entries: &'e BTreeMap<&'d str, Entry<'d>>,
    start: &'e str,
    mut target: &'e str,
) -> Result<(&'e EffectiveVariable, bool), ResolveError> {
    let mut path = vec![start];
    let mut secret = false;
    loop {
        match entries.get(target) {
            None => {
                return Err(ResolveError::MissingAliasTarget {
                    alias: path.last().copied().unwrap_or(start).to_owned(),
                    target: target.to_owned(),
                });
            }
            Some(Entry::Ready(var)) => return Ok((var, secret)),
            Some(Entry::Alias { def, target: next }) => {
                if let Some(at) = path.iter().position(|k| *k == target) {
                    let mut cycle: Vec<String> =
                        path[at..].iter().map(|k| (*k).to_owned()).collect();
                    cycle.push(target.to_owned());
                    return Err(ResolveError::AliasCycle { cycle });
                }
                if path.len() >= MAX_ALIAS_DEPTH {
                    return Err(ResolveError::AliasChainTooLong {
                        alias: start.to_owned(),
                    });
                }
                secret |= def.is_secret;
                path.push(target);
                target = next;
            }
        }
    }
}

fn file_path_of(def: &VariableDef) -> Option<String> {
    match def.kind {
        VariableKind::File => def.file_path.clone(),
        _ => None,
    }
}

fn source_of(def: &VariableDef, via_alias_of: Option<&str>) -> Source {
    Source {
        scope: def.scope,
        variable_id: def.id.clone(),
        kind: def.kind,
        via_alias_of: via_alias_of.map(str::to_owned),
    }
}

/// The overrides [`resolve`] ignores because no definition of their key exists along
/// the chain, sorted by key then scope: worth showing people as a warning, since such
/// an override does nothing.
pub fn orphan_overrides(defs: &[VariableDef]) -> Vec<&VariableDef> {
    let mut orphans: Vec<&VariableDef> = defs
        .iter()
        .filter(|o| !o.is_definition())
        .filter(|o| !defs.iter().any(|d| d.is_definition() && d.key == o.key))
        .collect();
    orphans.sort_by(|a, b| (&a.key, a.scope, &a.id).cmp(&(&b.key, b.scope, &b.id)));
    orphans
}
