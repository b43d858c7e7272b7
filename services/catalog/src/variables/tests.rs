use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn get<'a>(vars: &'a [EffectiveVariable], key: &str) -> &'a EffectiveVariable {
    match vars.iter().find(|v| v.key == key) {
        Some(v) => v,
        None => panic!("{key} missing from {vars:?}"),
    }
}

// ---- keys and paths -------------------------------------------------------------

#[test]
fn valid_keys() {
    for key in [
        "A",
        "_",
        "_x",
        "DATABASE_URL",
        "a1_b2",
        "SLIPWAYX",
        "SLIPWAY",
    ] {
        assert_eq!(validate_key(key), Ok(()), "{key}");
    }
    assert_eq!(validate_key(&"K".repeat(255)), Ok(()));
}

#[test]
fn invalid_keys() {
    assert_eq!(validate_key(""), Err(KeyError::Empty));
    assert_eq!(
        validate_key("1A"),
        Err(KeyError::InvalidFirstChar { ch: '1' })
    );
    assert_eq!(
        validate_key("A-B"),
        Err(KeyError::InvalidChar { ch: '-', index: 1 })
    );
    assert_eq!(
        validate_key("AÉ"),
        Err(KeyError::InvalidChar { ch: 'É', index: 1 })
    );
    assert_eq!(
        validate_key(&"K".repeat(256)),
        Err(KeyError::TooLong { len: 256 })
    );
}

#[test]
fn reserved_prefix_in_any_case() {
    for key in ["SLIPWAY_X", "slipway_x", "Slipway_Postgres_URL", "SLIPWAY_"] {
        assert_eq!(validate_key(key), Err(KeyError::Reserved), "{key}");
    }
    assert_eq!(validate_builtin_key("SLIPWAY_X"), Ok(()));
    assert_eq!(validate_builtin_key("OTHER"), Err(KeyError::NotReserved));
    assert_eq!(validate_alias_target("SLIPWAY_POSTGRES_URL"), Ok(()));
    let builtin = VariableDef::new_value("v", Scope::Service, "SLIPWAY_ID", "x");
    assert_eq!(
        builtin.validate(),
        Err(DefinitionError::Key(KeyError::Reserved))
    );
}

#[test]
fn file_paths() {
    assert_eq!(validate_file_path("/etc/app/config.json"), Ok(()));
    assert_eq!(validate_file_path("/a..b/c"), Ok(()));
    assert_eq!(validate_file_path(""), Err(FilePathError::Empty));
    assert_eq!(validate_file_path("etc/x"), Err(FilePathError::NotAbsolute));
    assert_eq!(
        validate_file_path("/etc/../root/x"),
        Err(FilePathError::ParentComponent)
    );
    assert_eq!(
        validate_file_path("/x/.."),
        Err(FilePathError::ParentComponent)
    );
    assert_eq!(validate_file_path("/etc/"), Err(FilePathError::Directory));
    assert_eq!(validate_file_path("/"), Err(FilePathError::Directory));
    assert_eq!(validate_file_path("/a\0b"), Err(FilePathError::Nul));
    let long = format!("/{}", "a".repeat(MAX_FILE_PATH_LEN));
    assert_eq!(
        validate_file_path(&long),
        Err(FilePathError::TooLong {
            len: MAX_FILE_PATH_LEN + 1
        })
    );
}

#[test]
fn definition_fields_match_kind() {
    let ok = [
        VariableDef::new_value("1", Scope::Project, "A", "x"),
        VariableDef::new_override("2", Scope::Service, "A", "y").secret(),
        VariableDef::new_alias("3", Scope::Service, "DATABASE_URL", "SLIPWAY_PG_URL"),
        VariableDef::new_file("4", Scope::Environment, "CFG", "/etc/cfg", "{}"),
    ];
    for def in ok {
        assert_eq!(def.validate(), Ok(()), "{def:?}");
    }
    let alias = VariableDef::new_alias("3", Scope::Service, "A", "B");
    assert_eq!(
        alias.clone().secret().validate(),
        Err(DefinitionError::SecretAlias)
    );
    assert_eq!(
        VariableDef::new_alias("3", Scope::Service, "A", "A").validate(),
        Err(DefinitionError::SelfAlias)
    );
    assert_eq!(
        VariableDef {
            alias_target: None,
            ..alias.clone()
        }
        .validate(),
        Err(DefinitionError::MissingAliasTarget)
    );
    assert_eq!(
        VariableDef {
            value: "x".into(),
            ..alias
        }
        .validate(),
        Err(DefinitionError::UnexpectedField {
            field: "value",
            kind: VariableKind::Alias
        })
    );
    let file = VariableDef::new_file("4", Scope::Service, "CFG", "rel", "");
    assert_eq!(
        file.validate(),
        Err(DefinitionError::FilePath(FilePathError::NotAbsolute))
    );
    assert_eq!(
        VariableDef::builtin("SLIPWAY_X", "1").validate(),
        Err(DefinitionError::BuiltInScope)
    );
    let big = VariableDef::new_value("1", Scope::Project, "A", &"x".repeat(MAX_VALUE_LEN + 1));
    assert!(matches!(
        big.validate(),
        Err(DefinitionError::ValueTooLong { .. })
    ));
}

// ---- chain checks -----------------------------------------------------------------

#[test]
fn chain_rules() {
    let chain = vec![
        VariableDef::builtin("SLIPWAY_PG_URL", "postgres://").secret(),
        VariableDef::new_value("p1", Scope::Project, "A", "1"),
        VariableDef::new_value("p2", Scope::Project, "S", "s").secret(),
        VariableDef::new_alias("e1", Scope::Environment, "AL", "A"),
    ];
    let check = |def: VariableDef| check_in_chain(&chain, &def);
    assert_eq!(
        check(VariableDef::new_override("s1", Scope::Service, "A", "2")),
        Ok(())
    );
    assert_eq!(
        check(VariableDef::new_value("s1", Scope::Service, "A", "2")),
        Err(ChainError::DefinedElsewhere {
            key: "A".into(),
            scope: Scope::Project
        })
    );
    assert_eq!(
        check(VariableDef::new_value("p9", Scope::Project, "A", "2")),
        Err(ChainError::AlreadyInScope { key: "A".into() })
    );
    // An update of the variable itself is not a clash with itself.
    assert_eq!(
        check(VariableDef::new_value("p1", Scope::Project, "A", "2")),
        Ok(())
    );
    assert_eq!(
        check(VariableDef::new_override("s1", Scope::Service, "NOPE", "2")),
        Err(ChainError::OverrideWithoutDefinition { key: "NOPE".into() })
    );
    assert_eq!(
        check(VariableDef::new_override(
            "e2",
            Scope::Environment,
            "AL",
            "2"
        )),
        Err(ChainError::AlreadyInScope { key: "AL".into() })
    );
    assert_eq!(
        check(VariableDef::new_override("s1", Scope::Service, "AL", "2")),
        Err(ChainError::OverrideOfAlias {
            key: "AL".into(),
            scope: Scope::Environment
        })
    );
    assert_eq!(
        check(VariableDef::new_override("s1", Scope::Service, "S", "2")),
        Err(ChainError::OverrideMustBeSecret { key: "S".into() })
    );
    assert_eq!(
        check(VariableDef::new_override("s1", Scope::Service, "S", "2").secret()),
        Ok(())
    );
    assert_eq!(
        check(VariableDef::new_alias(
            "s1",
            Scope::Service,
            "DB",
            "SLIPWAY_PG_URL"
        )),
        Ok(())
    );
    assert_eq!(
        check(VariableDef::new_alias("s1", Scope::Service, "B", "AL")),
        Err(ChainError::AliasOfAlias {
            target: "AL".into()
        })
    );
    assert_eq!(
        check(VariableDef::new_alias("s1", Scope::Service, "B", "MISSING")),
        Err(ChainError::AliasTargetNotFound {
            target: "MISSING".into()
        })
    );
    // An alias may not copy a key only defined narrower than itself.
    let narrow = vec![VariableDef::new_value("s1", Scope::Service, "X", "1")];
    assert_eq!(
        check_in_chain(
            &narrow,
            &VariableDef::new_alias("p1", Scope::Project, "Y", "X")
        ),
        Err(ChainError::AliasTargetNotFound { target: "X".into() })
    );
}

// ---- resolution ---------------------------------------------------------------------

#[test]
fn narrowest_wins_and_overrides() {
    let defs = vec![
        VariableDef::builtin("SLIPWAY_PG_URL", "postgres://u:p@pg/db").secret(),
        VariableDef::new_value("p1", Scope::Project, "LOG", "info"),
        VariableDef::new_override("e1", Scope::Environment, "LOG", "debug"),
        VariableDef::new_override("s1", Scope::Service, "LOG", "trace"),
        VariableDef::new_file("p2", Scope::Project, "CFG", "/etc/cfg", "a"),
        VariableDef::new_override("e2", Scope::Environment, "CFG", "b").secret(),
        VariableDef::new_alias("s2", Scope::Service, "DATABASE_URL", "SLIPWAY_PG_URL"),
        VariableDef::new_alias("s3", Scope::Service, "CFG_PATH", "CFG"),
    ];
    let out = resolve(&defs).unwrap();
    let keys: Vec<&str> = out.iter().map(|v| v.key.as_str()).collect();
    assert_eq!(
        keys,
        ["CFG", "CFG_PATH", "DATABASE_URL", "LOG", "SLIPWAY_PG_URL"]
    );
    let log = get(&out, "LOG");
    assert_eq!(log.value, "trace");
    assert_eq!(log.source.variable_id, "s1");
    assert_eq!(log.source.kind, VariableKind::Override);
    let cfg = get(&out, "CFG");
    assert_eq!(
        (cfg.value.as_str(), cfg.file_path.as_deref(), cfg.is_secret),
        ("b", Some("/etc/cfg"), true)
    );
    let db = get(&out, "DATABASE_URL");
    assert_eq!(db.value, "postgres://u:p@pg/db");
    assert!(db.is_secret);
    assert_eq!(db.source.via_alias_of.as_deref(), Some("SLIPWAY_PG_URL"));
    assert_eq!(db.source.kind, VariableKind::Alias);
    // An alias of a file holds the path, as the target's environment variable does.
    let path = get(&out, "CFG_PATH");
    assert_eq!(
        (path.value.as_str(), path.file_path.as_deref()),
        ("/etc/cfg", None)
    );
    assert!(path.is_secret);
}

#[test]
fn orphan_override_is_ignored_and_reported() {
    let defs = vec![
        VariableDef::new_override("s1", Scope::Service, "GONE", "x"),
        VariableDef::new_value("s2", Scope::Service, "KEPT", "y"),
    ];
    let out = resolve(&defs).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].key, "KEPT");
    let orphans: Vec<&str> = orphan_overrides(&defs)
        .iter()
        .map(|d| d.id.as_str())
        .collect();
    assert_eq!(orphans, ["s1"]);
}

#[test]
fn override_wider_than_definition_is_superseded() {
    let defs = vec![
        VariableDef::new_value("p1", Scope::Project, "A", "1"),
        VariableDef::new_override("e1", Scope::Environment, "A", "2"),
        VariableDef::new_value("s1", Scope::Service, "A", "3"),
    ];
    let out = resolve(&defs).unwrap();
    assert_eq!(out[0].value, "3");
    assert_eq!(out[0].source.variable_id, "s1");
}

#[test]
fn alias_sees_the_services_effective_value() {
    // The alias is defined on the project, the target overridden on the service: the
    // alias follows what the service sees.
    let defs = vec![
        VariableDef::new_value("p1", Scope::Project, "A", "project"),
        VariableDef::new_alias("p2", Scope::Project, "B", "A"),
        VariableDef::new_override("s1", Scope::Service, "A", "service"),
    ];
    let out = resolve(&defs).unwrap();
    assert_eq!(get(&out, "B").value, "service");
}

#[test]
fn alias_chain_is_followed() {
    let defs = vec![
        VariableDef::new_value("1", Scope::Project, "A", "v").secret(),
        VariableDef::new_alias("2", Scope::Project, "B", "A"),
        VariableDef::new_alias("3", Scope::Service, "C", "B"),
    ];
    let out = resolve(&defs).unwrap();
    let c = get(&out, "C");
    assert_eq!(c.value, "v");
    assert!(c.is_secret);
    assert_eq!(c.source.via_alias_of.as_deref(), Some("B"));
}

#[test]
fn alias_cycle_is_named() {
    let defs = vec![
        VariableDef::new_alias("1", Scope::Project, "A", "B"),
        VariableDef::new_alias("2", Scope::Environment, "B", "C"),
        VariableDef::new_alias("3", Scope::Service, "C", "A"),
    ];
    let err = resolve(&defs).unwrap_err();
    assert_eq!(
        err,
        ResolveError::AliasCycle {
            cycle: vec!["A".into(), "B".into(), "C".into(), "A".into()]
        }
    );
    assert_eq!(err.to_string(), "aliases form a cycle: A -> B -> C -> A");
    let selfish = vec![VariableDef::new_alias("1", Scope::Project, "A", "A")];
    assert_eq!(
        resolve(&selfish).unwrap_err(),
        ResolveError::AliasCycle {
            cycle: vec!["A".into(), "A".into()]
        }
    );
}

#[test]
fn alias_chain_depth_is_limited() {
    let mut defs = vec![VariableDef::new_value("0", Scope::Project, "K0", "v")];
    for i in 1..=MAX_ALIAS_DEPTH + 1 {
        let (key, target) = (format!("K{i}"), format!("K{}", i - 1));
        defs.push(VariableDef::new_alias(
            &i.to_string(),
            Scope::Project,
            &key,
            &target,
        ));
    }
    assert!(matches!(
        resolve(&defs),
        Err(ResolveError::AliasChainTooLong { .. })
    ));
    defs.truncate(MAX_ALIAS_DEPTH + 1);
    assert!(resolve(&defs).is_ok());
}

#[test]
fn missing_alias_target_is_named() {
    let defs = vec![
        VariableDef::new_alias("1", Scope::Service, "DATABASE_URL", "SLIPWAY_PG_URL"),
        // An override alone does not define its key.
        VariableDef::new_override("2", Scope::Service, "SLIPWAY_PG_URL", "x"),
    ];
    let err = resolve(&defs).unwrap_err();
    assert_eq!(
        err,
        ResolveError::MissingAliasTarget {
            alias: "DATABASE_URL".into(),
            target: "SLIPWAY_PG_URL".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "alias DATABASE_URL copies SLIPWAY_PG_URL, which is not defined"
    );
}

#[test]
fn duplicates_are_refused() {
    let defs = vec![
        VariableDef::new_value("1", Scope::Project, "A", "1"),
        VariableDef::new_value("2", Scope::Project, "A", "2"),
    ];
    assert_eq!(
        resolve(&defs),
        Err(ResolveError::DuplicateKey {
            key: "A".into(),
            scope: Scope::Project
        })
    );
    let mounts = vec![
        VariableDef::new_file("1", Scope::Project, "A", "/f", "1"),
        VariableDef::new_file("2", Scope::Service, "B", "/f", "2"),
    ];
    assert_eq!(
        resolve(&mounts),
        Err(ResolveError::DuplicateMountPath {
            path: "/f".into(),
            first: "A".into(),
            second: "B".into()
        })
    );
}

// ---- built-ins ------------------------------------------------------------------------

#[test]
fn builtins() {
    let ctx = BuiltinContext {
        organization_id: "o".into(),
        project_id: "p".into(),
        project_name: "shop".into(),
        environment_id: "e".into(),
        environment_name: "staging".into(),
        environment_mode: "STAGING".into(),
        service_id: "s".into(),
        service_name: "api".into(),
        peers: vec![
            PeerService {
                name: "api".into(),
                internal_port: Some(8080),
                database_url: None,
            },
            PeerService {
                name: "main-db".into(),
                internal_port: Some(5432),
                database_url: Some("postgres://u:p@main-db:5432/app".into()),
            },
            PeerService {
                name: "worker".into(),
                internal_port: None,
                database_url: None,
            },
        ],
    };
    let vars = builtin_variables(&ctx);
    let got: Vec<(&str, &str, bool)> = vars
        .iter()
        .map(|v| (v.key.as_str(), v.value.as_str(), v.is_secret))
        .collect();
    assert_eq!(
        got,
        [
            ("SLIPWAY_API_HOST", "api", false),
            ("SLIPWAY_API_PORT", "8080", false),
            ("SLIPWAY_ENVIRONMENT_ID", "e", false),
            ("SLIPWAY_ENVIRONMENT_MODE", "STAGING", false),
            ("SLIPWAY_ENVIRONMENT_NAME", "staging", false),
            ("SLIPWAY_MAIN_DB_HOST", "main-db", false),
            ("SLIPWAY_MAIN_DB_PORT", "5432", false),
            (
                "SLIPWAY_MAIN_DB_URL",
                "postgres://u:p@main-db:5432/app",
                true
            ),
            ("SLIPWAY_ORGANIZATION_ID", "o", false),
            ("SLIPWAY_PROJECT_ID", "p", false),
            ("SLIPWAY_PROJECT_NAME", "shop", false),
            ("SLIPWAY_SERVICE_ID", "s", false),
            ("SLIPWAY_SERVICE_NAME", "api", false),
        ]
    );
    for v in &vars {
        assert_eq!(validate_builtin_key(&v.key), Ok(()), "{}", v.key);
        assert_eq!(v.scope, Scope::BuiltIn);
        assert_eq!(v.id, "");
    }
    // Built-ins feed resolution like any other scope.
    let mut defs = vars;
    defs.push(VariableDef::new_alias(
        "a",
        Scope::Service,
        "DATABASE_URL",
        "SLIPWAY_MAIN_DB_URL",
    ));
    let out = resolve(&defs).unwrap();
    let db = get(&out, "DATABASE_URL");
    assert!(db.is_secret);
    assert_eq!(db.value, "postgres://u:p@main-db:5432/app");
}

// ---- property tests over random scope trees ------------------------------------------

/// Keys of the random trees. An alias of key `i` only targets keys `< i`, so the graph
/// of aliases is acyclic and every error is a missing target.
const KEYS: [&str; 6] = ["K0", "K1", "K2", "K3", "K4", "K5"];
const SCOPES: [Scope; 4] = [
    Scope::BuiltIn,
    Scope::Project,
    Scope::Environment,
    Scope::Service,
];

fn arb_def(key_index: usize, scope: Scope) -> impl Strategy<Value = Option<VariableDef>> {
    let key = KEYS[key_index];
    let id = format!("{scope:?}-{key}");
    let path = format!("/mnt/{key}");
    let kinds = if scope == Scope::BuiltIn { 1 } else { 4 };
    let target = if key_index == 0 { 0..1 } else { 0..key_index };
    (
        proptest::bool::weighted(0.6),
        0..kinds,
        "[a-z]{0,3}",
        any::<bool>(),
        target,
    )
        .prop_map(move |(present, kind, value, secret, target)| {
            if !present {
                return None;
            }
            let def = match kind {
                0 => VariableDef::new_value(&id, scope, key, &value),
                1 => VariableDef::new_override(&id, scope, key, &value),
                2 => VariableDef::new_file(&id, scope, key, &path, &value),
                _ if key_index == 0 => VariableDef::new_value(&id, scope, key, &value),
                _ => VariableDef::new_alias(&id, scope, key, KEYS[target]),
            };
            Some(if secret { def.secret() } else { def })
        })
}

fn arb_tree() -> impl Strategy<Value = Vec<VariableDef>> {
    let cells: Vec<_> = (0..KEYS.len())
        .flat_map(|k| SCOPES.iter().map(move |s| arb_def(k, *s)))
        .collect();
    cells.prop_map(|defs| defs.into_iter().flatten().collect())
}

/// The narrowest definition of `key` and the override (if any) that decides its value;
/// an independent statement of rules 1-3.
fn oracle<'a>(defs: &'a [VariableDef], key: &str) -> Option<(&'a VariableDef, &'a VariableDef)> {
    let of_key = || defs.iter().filter(|d| d.key == key);
    let def = of_key()
        .filter(|d| d.kind != VariableKind::Override)
        .max_by_key(|d| d.scope)?;
    let winner = of_key()
        .filter(|d| d.kind == VariableKind::Override && d.scope > def.scope)
        .max_by_key(|d| d.scope)
        .unwrap_or(def);
    Some((def, winner))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn resolution_follows_the_rules(defs in arb_tree()) {
        let result = resolve(&defs);
        let out = match result {
            Ok(out) => out,
            Err(ResolveError::MissingAliasTarget { target, .. }) => {
                // Only a key with no definition anywhere can be missing.
                prop_assert!(oracle(&defs, &target).is_none());
                return Ok(());
            }
            Err(other) => return Err(TestCaseError::fail(format!("unexpected {other}"))),
        };
        let by_key: BTreeMap<&str, &EffectiveVariable> =
            out.iter().map(|v| (v.key.as_str(), v)).collect();
        // Unique and sorted.
        prop_assert!(out.windows(2).all(|w| w[0].key < w[1].key));
        for key in KEYS {
            let Some((def, winner)) = oracle(&defs, key) else {
                // Overrides never create keys.
                prop_assert!(!by_key.contains_key(key));
                continue;
            };
            let var = by_key.get(key).copied();
            prop_assert!(var.is_some(), "{key} missing");
            let Some(var) = var else { continue };
            prop_assert_eq!(&var.source.variable_id, &winner.id);
            if winner.kind == VariableKind::Alias {
                let target = winner.alias_target.as_deref().unwrap_or_default();
                let t = by_key.get(target).copied();
                prop_assert!(t.is_some(), "alias target {target} missing");
                let Some(t) = t else { continue };
                prop_assert_eq!(&var.value, t.env_value());
                prop_assert_eq!(var.is_secret, t.is_secret || winner.is_secret);
                prop_assert_eq!(var.file_path.as_deref(), None);
                prop_assert_eq!(var.source.via_alias_of.as_deref(), Some(target));
            } else {
                prop_assert_eq!(&var.value, &winner.value);
                prop_assert_eq!(var.is_secret, def.is_secret || winner.is_secret);
                let path = (def.kind == VariableKind::File).then(|| def.file_path.clone()).flatten();
                prop_assert_eq!(&var.file_path, &path);
                prop_assert_eq!(var.source.via_alias_of.as_deref(), None);
            }
        }
    }

    #[test]
    fn resolution_ignores_input_order(
        (defs, shuffled) in arb_tree().prop_flat_map(|d| (Just(d.clone()), Just(d).prop_shuffle()))
    ) {
        prop_assert_eq!(resolve(&defs), resolve(&shuffled));
    }

    #[test]
    fn validate_key_never_panics_and_agrees_with_the_pattern(key in "\\PC{0,12}|[A-Za-z_][A-Za-z0-9_]{0,10}") {
        let ok = validate_key(&key).is_ok();
        let pattern = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !key.to_ascii_uppercase().starts_with("SLIPWAY_");
        prop_assert_eq!(ok, pattern);
    }
}
