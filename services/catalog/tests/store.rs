//! The catalog store on real databases: every scenario runs on PostgreSQL and on SQLite,
//! because the embedded mode (`slipway dev`) must behave exactly like a real install.

use std::collections::HashSet;
use std::time::Duration;

use slipway_catalog::store::*;
use slipway_testkit::TestDatabase;

type TestResult = Result<(), Box<dyn std::error::Error>>;

macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() -> super::TestResult {
                    let db = slipway_testkit::TestDatabase::postgres().await?;
                    let store = super::open(&db).await?;
                    super::$name(&store).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() -> super::TestResult {
                    let db = slipway_testkit::TestDatabase::sqlite()?;
                    let store = super::open(&db).await?;
                    super::$name(&store).await
                }
            }
        )+
    };
}

on_both_backends!(
    crud_with_etags,
    names_are_unique_per_parent,
    request_ids_replay_the_first_result,
    pagination_sees_every_preexisting_row_once,
    name_pagination_is_ordered_and_sees_every_preexisting_row_once,
    listings_never_cross_organizations,
    deletes_refuse_or_remove_children,
    children_need_their_parent,
    organization_keys_are_created_once,
    cluster_connections_upsert,
    deleting_a_cluster_removes_its_connection,
);

async fn open(db: &TestDatabase) -> Result<Store, Box<dyn std::error::Error>> {
    let conn =
        slipway_db::connect_and_migrate::<Migrator>(db.url(), 8, Duration::from_secs(15)).await?;
    Ok(Store::new(conn))
}

fn project(org: &str, name: &str) -> NewRow {
    NewRow {
        id: new_id(),
        organization_id: org.into(),
        parent_id: org.into(),
        name: name.into(),
        spec: name.as_bytes().to_vec(),
        ..NewRow::default()
    }
}

fn environment(project: &Row, name: &str) -> NewRow {
    NewRow {
        id: new_id(),
        organization_id: project.organization_id.clone(),
        parent_id: project.id.clone(),
        name: name.into(),
        project_id: Some(project.id.clone()),
        cluster_id: Some("cluster-1".into()),
        ..NewRow::default()
    }
}

fn service(environment: &Row, name: &str) -> NewRow {
    NewRow {
        id: new_id(),
        organization_id: environment.organization_id.clone(),
        parent_id: environment.id.clone(),
        name: name.into(),
        subtype: "CONTAINER".into(),
        project_id: environment.project_id.clone(),
        environment_id: Some(environment.id.clone()),
        ..NewRow::default()
    }
}

fn variable(parent: &Row, key: &str) -> NewRow {
    NewRow {
        id: new_id(),
        organization_id: parent.organization_id.clone(),
        parent_id: parent.id.clone(),
        name: key.into(),
        project_id: parent.project_id.clone().or(Some(parent.id.clone())),
        environment_id: parent
            .environment_id
            .clone()
            .or_else(|| (parent.kind == Kind::Environment).then(|| parent.id.clone())),
        sealed: Some(vec![1, 2, 3]),
        ..NewRow::default()
    }
}

async fn crud_with_etags(store: &Store) -> TestResult {
    let (created, fresh) = store
        .insert(Kind::Project, project("org-a", "shop"), None)
        .await?;
    assert!(fresh);
    assert_eq!(store.get(Kind::Project, &created.id).await?, created);
    let updated = store
        .update(
            Kind::Project,
            &created.id,
            Some(&created.etag),
            RowChanges {
                spec: Some(b"new".to_vec()),
                ..RowChanges::default()
            },
        )
        .await?;
    assert_eq!(updated.spec, b"new");
    assert_ne!(updated.etag, created.etag);
    assert!(updated.update_time >= created.update_time);
    let stale = store
        .update(
            Kind::Project,
            &created.id,
            Some(&created.etag),
            RowChanges::default(),
        )
        .await;
    assert!(matches!(
        stale,
        Err(StoreError::EtagMismatch(Kind::Project))
    ));
    let stale = store
        .delete(
            Kind::Project,
            &created.id,
            Some(&created.etag),
            Children::Refuse,
        )
        .await;
    assert!(matches!(
        stale,
        Err(StoreError::EtagMismatch(Kind::Project))
    ));
    let deleted = store
        .delete(
            Kind::Project,
            &created.id,
            Some(&updated.etag),
            Children::Refuse,
        )
        .await?;
    assert_eq!(deleted.len(), 1);
    assert!(matches!(
        store.get(Kind::Project, &created.id).await,
        Err(StoreError::NotFound(Kind::Project))
    ));
    assert!(matches!(
        store
            .update(Kind::Project, &created.id, None, RowChanges::default())
            .await,
        Err(StoreError::NotFound(Kind::Project))
    ));
    Ok(())
}

async fn names_are_unique_per_parent(store: &Store) -> TestResult {
    let (a, _) = store
        .insert(Kind::Project, project("org-a", "shop"), None)
        .await?;
    let taken = store
        .insert(Kind::Project, project("org-a", "shop"), None)
        .await;
    assert!(matches!(
        taken,
        Err(StoreError::AlreadyExists(Kind::Project))
    ));
    // Another organization may use the name.
    store
        .insert(Kind::Project, project("org-b", "shop"), None)
        .await?;
    let (b, _) = store
        .insert(Kind::Project, project("org-a", "blog"), None)
        .await?;
    let renamed = store
        .update(
            Kind::Project,
            &b.id,
            None,
            RowChanges {
                name: Some("shop".into()),
                ..RowChanges::default()
            },
        )
        .await;
    assert!(matches!(
        renamed,
        Err(StoreError::AlreadyExists(Kind::Project))
    ));
    let (env, _) = store
        .insert(Kind::Environment, environment(&a, "prod"), None)
        .await?;
    store
        .insert(Kind::Environment, environment(&b, "prod"), None)
        .await?;
    assert!(matches!(
        store
            .insert(Kind::Environment, environment(&a, "prod"), None)
            .await,
        Err(StoreError::AlreadyExists(Kind::Environment))
    ));
    store
        .insert(Kind::Service, service(&env, "api"), None)
        .await?;
    assert!(matches!(
        store
            .insert(Kind::Service, service(&env, "api"), None)
            .await,
        Err(StoreError::AlreadyExists(Kind::Service))
    ));
    Ok(())
}

async fn request_ids_replay_the_first_result(store: &Store) -> TestResult {
    let key = || RequestKey {
        organization_id: "org-a".into(),
        method: "CreateProject",
        request_id: "req-1".into(),
    };
    let (first, fresh) = store
        .insert(Kind::Project, project("org-a", "shop"), Some(key()))
        .await?;
    assert!(fresh);
    // The repeat carries another name: still nothing new is created.
    let (again, fresh) = store
        .insert(Kind::Project, project("org-a", "other"), Some(key()))
        .await?;
    assert!(!fresh);
    assert_eq!(again, first);
    let all = store
        .list_all(
            Kind::Project,
            &Filter {
                organization_id: "org-a".into(),
                ..Filter::default()
            },
        )
        .await?;
    assert_eq!(all.len(), 1);
    // The same request id in another organization or method is another request.
    let other_org = RequestKey {
        organization_id: "org-b".into(),
        ..key()
    };
    let (_, fresh) = store
        .insert(Kind::Project, project("org-b", "shop"), Some(other_org))
        .await?;
    assert!(fresh);
    // A failed create records nothing: the id can be used again.
    let failing = RequestKey {
        request_id: "req-2".into(),
        ..key()
    };
    assert!(
        store
            .insert(
                Kind::Project,
                project("org-a", "shop"),
                Some(failing.clone())
            )
            .await
            .is_err()
    );
    let (_, fresh) = store
        .insert(Kind::Project, project("org-a", "blog"), Some(failing))
        .await?;
    assert!(fresh);
    Ok(())
}

async fn pagination_sees_every_preexisting_row_once(store: &Store) -> TestResult {
    let mut existing = HashSet::new();
    for i in 0..23 {
        let (row, _) = store
            .insert(Kind::Project, project("org-a", &format!("p{i}")), None)
            .await?;
        existing.insert(row.id);
    }
    let filter = Filter {
        organization_id: "org-a".into(),
        ..Filter::default()
    };
    let mut seen = Vec::new();
    let mut after = None;
    let mut inserted = 0;
    loop {
        let page = store
            .list(Kind::Project, &filter, &PageRequest { size: 5, after })
            .await?;
        assert!(page.rows.len() <= 5);
        seen.extend(page.rows.into_iter().map(|row| row.id));
        // Rows created during the walk must not displace or repeat older ones.
        store
            .insert(
                Kind::Project,
                project("org-a", &format!("new{inserted}")),
                None,
            )
            .await?;
        inserted += 1;
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "a row was listed twice");
    assert!(existing.is_subset(&unique), "a pre-existing row was missed");
    Ok(())
}

/// The name order the API's lists promise, walked while rows are inserted before and after
/// the cursor. Environments listed for a whole organization span projects, so names repeat
/// and the id must break ties, including across page boundaries.
async fn name_pagination_is_ordered_and_sees_every_preexisting_row_once(
    store: &Store,
) -> TestResult {
    let mut projects = Vec::new();
    for name in ["shop", "blog", "wiki"] {
        projects.push(
            store
                .insert(Kind::Project, project("org-a", name), None)
                .await?
                .0,
        );
    }
    let mut existing = HashSet::new();
    // Inserted out of name order, so id order and name order differ.
    for i in [7, 2, 5, 0, 3, 6, 1, 4] {
        for parent in &projects {
            let (row, _) = store
                .insert(
                    Kind::Environment,
                    environment(parent, &format!("e{i}")),
                    None,
                )
                .await?;
            existing.insert(row.id);
        }
    }
    let filter = Filter {
        organization_id: "org-a".into(),
        ..Filter::default()
    };
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut after: Option<NameCursor> = None;
    let mut inserted = 0;
    loop {
        let page = store
            .list_by(Kind::Environment, &filter, &PageRequest { size: 5, after })
            .await?;
        assert!(page.rows.len() <= 5);
        seen.extend(page.rows.into_iter().map(|row| (row.name, row.id)));
        // New rows sort before the cursor, after it, and level with it.
        let parent = &projects[inserted % projects.len()];
        for name in [
            format!("a{inserted}"),
            format!("z{inserted}"),
            format!("e4-{inserted}"),
        ] {
            store
                .insert(Kind::Environment, environment(parent, &name), None)
                .await?;
        }
        inserted += 1;
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert!(
        seen.windows(2).all(|pair| pair[0] < pair[1]),
        "rows out of (name, id) order or repeated: {seen:?}"
    );
    let ids: HashSet<_> = seen.iter().map(|(_, id)| id.clone()).collect();
    assert!(existing.is_subset(&ids), "a pre-existing row was missed");
    Ok(())
}

async fn listings_never_cross_organizations(store: &Store) -> TestResult {
    let (a, _) = store
        .insert(Kind::Project, project("org-a", "shop"), None)
        .await?;
    let (b, _) = store
        .insert(Kind::Project, project("org-b", "shop"), None)
        .await?;
    let env_a = store
        .insert(Kind::Environment, environment(&a, "prod"), None)
        .await?
        .0;
    store
        .insert(Kind::Environment, environment(&b, "prod"), None)
        .await?;
    // Org B naming org A's project as the parent sees nothing.
    let crossed = store
        .list_all(
            Kind::Environment,
            &Filter {
                organization_id: "org-b".into(),
                parent_id: Some(a.id.clone()),
                ..Filter::default()
            },
        )
        .await?;
    assert!(crossed.is_empty());
    let own = store
        .list_all(
            Kind::Environment,
            &Filter {
                organization_id: "org-a".into(),
                parent_id: Some(a.id.clone()),
                ..Filter::default()
            },
        )
        .await?;
    assert_eq!(own, vec![env_a]);
    let named = store
        .list_all(
            Kind::Project,
            &Filter {
                organization_id: "org-a".into(),
                name_contains: Some("ho".into()),
                ..Filter::default()
            },
        )
        .await?;
    assert_eq!(named.len(), 1);
    let wildcard = store
        .list_all(
            Kind::Project,
            &Filter {
                organization_id: "org-a".into(),
                name_contains: Some("_".into()),
                ..Filter::default()
            },
        )
        .await?;
    assert!(wildcard.is_empty(), "'_' must match only itself");
    Ok(())
}

async fn deletes_refuse_or_remove_children(store: &Store) -> TestResult {
    let (p, _) = store
        .insert(Kind::Project, project("org-a", "shop"), None)
        .await?;
    let (env, _) = store
        .insert(Kind::Environment, environment(&p, "prod"), None)
        .await?;
    let (svc, _) = store
        .insert(Kind::Service, service(&env, "api"), None)
        .await?;
    store
        .insert(Kind::Variable, variable(&p, "A"), None)
        .await?;
    store
        .insert(Kind::Variable, variable(&env, "B"), None)
        .await?;
    let mut svc_var = variable(&svc, "C");
    svc_var.service_id = Some(svc.id.clone());
    store.insert(Kind::Variable, svc_var, None).await?;
    let refused = store
        .delete(Kind::Project, &p.id, None, Children::Refuse)
        .await;
    assert!(matches!(
        refused,
        Err(StoreError::HasChildren {
            parent: Kind::Project,
            ..
        })
    ));
    assert!(store.get(Kind::Service, &svc.id).await.is_ok());
    // A cluster with environments is never deleted, force or not.
    let cluster = NewRow {
        id: "cluster-1".into(),
        organization_id: "org-a".into(),
        parent_id: "org-a".into(),
        name: "main".into(),
        ..NewRow::default()
    };
    store.insert(Kind::Cluster, cluster, None).await?;
    assert!(matches!(
        store
            .delete(Kind::Cluster, "cluster-1", None, Children::Delete)
            .await,
        Err(StoreError::HasChildren { .. })
    ));
    let deleted = store
        .delete(Kind::Project, &p.id, None, Children::Delete)
        .await?;
    let kinds: Vec<Kind> = deleted.iter().map(|row| row.kind).collect();
    assert_eq!(kinds[0], Kind::Project);
    assert_eq!(deleted.len(), 6, "{kinds:?}");
    for kind in [Kind::Environment, Kind::Service, Kind::Variable] {
        let left = store
            .list_all(
                kind,
                &Filter {
                    organization_id: "org-a".into(),
                    ..Filter::default()
                },
            )
            .await?;
        assert!(left.is_empty(), "{kind} left behind");
    }
    store
        .delete(Kind::Cluster, "cluster-1", None, Children::Refuse)
        .await?;
    Ok(())
}

async fn children_need_their_parent(store: &Store) -> TestResult {
    let ghost = Row {
        kind: Kind::Project,
        id: new_id(),
        organization_id: "org-a".into(),
        parent_id: "org-a".into(),
        name: "ghost".into(),
        subtype: String::new(),
        project_id: None,
        environment_id: None,
        service_id: None,
        cluster_id: None,
        spec: Vec::new(),
        sealed: None,
        lookup_hash: None,
        etag: String::new(),
        create_time: now(),
        update_time: now(),
    };
    let orphan = store
        .insert(Kind::Environment, environment(&ghost, "prod"), None)
        .await;
    assert!(
        matches!(orphan, Err(StoreError::MissingReference(Kind::Project))),
        "{orphan:?}"
    );
    Ok(())
}

async fn organization_keys_are_created_once(store: &Store) -> TestResult {
    let first = store.organization_key("org-a", || vec![1; 40]).await?;
    let second = store.organization_key("org-a", || vec![2; 40]).await?;
    assert_eq!(first, vec![1; 40]);
    assert_eq!(second, first);
    assert_eq!(
        store.organization_key("org-b", || vec![3; 40]).await?,
        vec![3; 40]
    );
    Ok(())
}

async fn cluster_connections_upsert(store: &Store) -> TestResult {
    assert_eq!(store.cluster_connection("c1").await?, None);
    let mut state = ClusterConnection {
        cluster_id: "c1".into(),
        organization_id: "org-a".into(),
        connected: true,
        agent_version: "0.1.0".into(),
        replica_id: "r1".into(),
        last_heartbeat_time: Some(now()),
        connect_time: Some(now()),
        update_time: now(),
    };
    store.put_cluster_connection(&state).await?;
    assert_eq!(store.cluster_connection("c1").await?, Some(state.clone()));
    state.connected = false;
    state.update_time = now();
    store.put_cluster_connection(&state).await?;
    assert_eq!(store.cluster_connection("c1").await?, Some(state));
    Ok(())
}

async fn deleting_a_cluster_removes_its_connection(store: &Store) -> TestResult {
    let cluster = |name: &str| NewRow {
        id: new_id(),
        organization_id: "org-a".into(),
        parent_id: "org-a".into(),
        name: name.into(),
        ..NewRow::default()
    };
    let connection = |cluster: &Row| ClusterConnection {
        cluster_id: cluster.id.clone(),
        organization_id: cluster.organization_id.clone(),
        connected: true,
        agent_version: "0.1.0".into(),
        replica_id: "r1".into(),
        last_heartbeat_time: Some(now()),
        connect_time: Some(now()),
        update_time: now(),
    };
    let (doomed, _) = store.insert(Kind::Cluster, cluster("doomed"), None).await?;
    let (kept, _) = store.insert(Kind::Cluster, cluster("kept"), None).await?;
    store.put_cluster_connection(&connection(&doomed)).await?;
    store.put_cluster_connection(&connection(&kept)).await?;

    // A refused delete (an environment still runs on the cluster) keeps the state too.
    let (project_row, _) = store
        .insert(Kind::Project, project("org-a", "shop"), None)
        .await?;
    let (env, _) = store
        .insert(
            Kind::Environment,
            NewRow {
                cluster_id: Some(doomed.id.clone()),
                ..environment(&project_row, "prod")
            },
            None,
        )
        .await?;
    assert!(matches!(
        store
            .delete(Kind::Cluster, &doomed.id, None, Children::Delete)
            .await,
        Err(StoreError::HasChildren { .. })
    ));
    assert!(store.cluster_connection(&doomed.id).await?.is_some());

    store
        .delete(Kind::Environment, &env.id, None, Children::Refuse)
        .await?;
    store
        .delete(Kind::Cluster, &doomed.id, None, Children::Refuse)
        .await?;
    assert_eq!(store.cluster_connection(&doomed.id).await?, None);
    assert!(
        store.cluster_connection(&kept.id).await?.is_some(),
        "another cluster's connection was removed"
    );
    Ok(())
}
