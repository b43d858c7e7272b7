//! The identity store on real databases: every scenario runs on PostgreSQL and on SQLite,
//! because the embedded mode (`slipway dev`) must behave exactly like a real install.
//!
//! PostgreSQL comes from `SLIPWAY_TEST_DATABASE_URL`, or a throwaway server slipway-testkit
//! starts; each test gets a database of its own.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use slipway_db::DbBackend;
use slipway_db::sea_orm::ConnectionTrait as _;
use slipway_identity::store::*;
use slipway_testkit::TestDatabase;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Runs `scenario` on a fresh, migrated database of each backend.
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
    migrations_are_idempotent,
    users_are_created_on_first_sight,
    organizations_crud_and_conflicts,
    organizations_are_listed_per_member,
    listings_never_cross_organizations,
    pagination_visits_every_row_once,
    transfer_leaves_exactly_one_owner,
    concurrent_transfers_leave_exactly_one_owner,
    owner_is_immutable_outside_transfers,
    members_roles_and_removal,
    invitation_accept_is_atomic,
    invitation_states,
    concurrent_accepts_create_one_member,
    roles_crud_and_in_use,
    api_tokens_lifecycle,
    audit_filters,
    delete_organization_removes_what_it_owns,
    database_enforces_invariants,
);

async fn open(db: &TestDatabase) -> Result<Store, Box<dyn std::error::Error>> {
    let conn =
        slipway_db::connect_and_migrate::<Migrator>(db.url(), 8, Duration::from_secs(15)).await?;
    assert_eq!(conn.get_database_backend(), db.backend());
    Ok(Store::new(conn))
}

// ---------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------

async fn user(store: &Store, name: &str) -> Result<User, StoreError> {
    store
        .upsert_user(&UserClaims {
            issuer: "https://issuer.test".into(),
            subject: format!("sub-{name}"),
            email: format!("{name}@example.com"),
            display_name: name.to_uppercase(),
        })
        .await
}

async fn org(
    store: &Store,
    name: &str,
    owner: &User,
) -> Result<(Organization, Member), StoreError> {
    store
        .create_organization(
            &NewOrganization {
                name: name.into(),
                display_name: format!("{name} inc"),
            },
            &owner.id,
        )
        .await
}

fn admin() -> PrincipalRef {
    PrincipalRef {
        kind: PrincipalKind::User,
        id: "someone".into(),
        display_name: "someone@example.com".into(),
    }
}

/// A hash no other call returns: tokens need unique hashes.
fn hash(seed: &str) -> SecretHash {
    let mut digest = [0u8; 32];
    for (i, b) in seed.bytes().enumerate() {
        digest[i % 32] ^= b.wrapping_add(i as u8);
    }
    digest[31] = seed.len() as u8;
    SecretHash::from_digest(digest)
}

fn in_days(days: i64) -> DateTime<Utc> {
    now() + TimeDelta::days(days)
}

async fn invite(
    store: &Store,
    org: &Organization,
    email: &str,
    role: RoleRef,
    expire_time: DateTime<Utc>,
) -> Result<Invitation, StoreError> {
    let token = uuid::Uuid::now_v7().to_string();
    invite_with_token(store, org, email, role, expire_time, &token).await
}

async fn invite_with_token(
    store: &Store,
    org: &Organization,
    email: &str,
    role: RoleRef,
    expire_time: DateTime<Utc>,
    token: &str,
) -> Result<Invitation, StoreError> {
    store
        .create_invitation(&NewInvitation {
            organization_id: org.id.clone(),
            email: email.into(),
            role,
            token_hash: hash(token),
            expire_time,
            inviter: admin(),
        })
        .await
}

/// Adds `user` to `org` with `role` through an invitation, as the API does.
async fn join(
    store: &Store,
    org: &Organization,
    user: &User,
    role: BuiltinRole,
) -> Result<Member, StoreError> {
    let inv = invite(store, org, &user.email, RoleRef::Builtin(role), in_days(7)).await?;
    let (member, _) = store.accept_invitation(&inv.id, &user.id).await?;
    Ok(member)
}

async fn new_role(store: &Store, org: &Organization, name: &str) -> Result<Role, StoreError> {
    store
        .create_role(&NewRole {
            organization_id: org.id.clone(),
            name: name.into(),
            description: String::new(),
            grants: serde_json::json!({"default_cluster_permission": "VIEWER"}),
        })
        .await
}

async fn new_token(
    store: &Store,
    org: &Organization,
    name: &str,
    role: RoleRef,
) -> Result<ApiToken, StoreError> {
    store
        .create_api_token(&NewApiToken {
            organization_id: org.id.clone(),
            name: name.into(),
            description: format!("token {name}"),
            role,
            secret_hash: hash(&format!("{}/{name}", org.id)),
            secret_hint: "slp_abcd".into(),
            expire_time: None,
            creator: admin(),
        })
        .await
}

fn audit(org: &Organization, action: &str, at: DateTime<Utc>) -> NewAuditEvent {
    NewAuditEvent {
        organization_id: org.id.clone(),
        actor: admin(),
        action: action.into(),
        method: "/slipway.identity.v1.RoleService/CreateRole".into(),
        target: AuditTarget {
            kind: Some("ROLE".into()),
            ..AuditTarget::default()
        },
        event_time: at,
        origin: Origin {
            ip_address: "192.0.2.1".into(),
            user_agent: "test".into(),
        },
        status_code: "OK".into(),
        error_reason: String::new(),
    }
}

/// Every item of a listing, page by page, checking that pages are at most `size` long and
/// that only the last page has no cursor.
async fn collect_all<T, C, F, Fut>(size: u64, mut fetch: F) -> Result<Vec<T>, StoreError>
where
    F: FnMut(PageRequest<C>) -> Fut,
    Fut: std::future::Future<Output = Result<Page<T, C>, StoreError>>,
{
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = fetch(PageRequest { size, after }).await?;
        assert!(page.items.len() as u64 <= size.max(1));
        if page.next.is_some() {
            assert_eq!(
                page.items.len() as u64,
                size.max(1),
                "a full page before the end"
            );
        }
        all.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(all),
        }
    }
}

fn assert_err<T: std::fmt::Debug>(result: Result<T, StoreError>, expected: &str) {
    let text = match &result {
        Err(err) => format!("{err:?}"),
        Ok(v) => panic!("expected {expected}, got Ok({v:?})"),
    };
    assert!(
        text.starts_with(expected),
        "expected {expected}, got {text}"
    );
}

// ---------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------

async fn migrations_are_idempotent(store: &Store) -> TestResult {
    // A second start applies nothing and fails on nothing.
    slipway_db::migrate::<Migrator>(store.connection()).await?;
    let backend = store.connection().get_database_backend();
    // The service's own migration table, as `slipway dev` relies on.
    let row = store
        .connection()
        .query_one_raw(slipway_db::sea_orm::Statement::from_string(
            backend,
            "SELECT count(*) FROM seaql_migrations_identity",
        ))
        .await?
        .ok_or("no row")?;
    let applied: i64 = row.try_get_by_index(0)?;
    // Every step once: m0001, m0002 (creates' `request_id`s), m0003 (actions' results),
    // m0004 (owner credentials).
    assert_eq!(applied, 4);
    assert!(matches!(backend, DbBackend::Postgres | DbBackend::Sqlite));
    Ok(())
}

async fn users_are_created_on_first_sight(store: &Store) -> TestResult {
    let first = user(store, "ada").await?;
    let again = user(store, "ada").await?;
    assert_eq!(
        first, again,
        "same (issuer, subject), same claims: nothing changes"
    );
    assert_eq!(store.get_user(&first.id).await?, first);

    let renamed = store
        .upsert_user(&UserClaims {
            issuer: first.oidc_issuer.clone(),
            subject: first.oidc_subject.clone(),
            email: "ada@lovelace.example".into(),
            display_name: "Ada L.".into(),
        })
        .await?;
    assert_eq!(renamed.id, first.id);
    assert_eq!(renamed.email, "ada@lovelace.example");
    assert_eq!(renamed.create_time, first.create_time);
    assert!(renamed.update_time >= first.update_time);

    // The same subject at another issuer is another person.
    let other = store
        .upsert_user(&UserClaims {
            issuer: "https://other.test".into(),
            subject: first.oidc_subject.clone(),
            email: "ada@example.com".into(),
            display_name: String::new(),
        })
        .await?;
    assert_ne!(other.id, first.id);
    assert_err(store.get_user("missing").await, "NotFound(User)");
    Ok(())
}

async fn organizations_crud_and_conflicts(store: &Store) -> TestResult {
    let ada = user(store, "ada").await?;
    let (acme, owner) = org(store, "acme", &ada).await?;
    assert_eq!(acme.owner_user_id, ada.id);
    assert_eq!(owner.role, RoleRef::Builtin(BuiltinRole::Owner));
    assert_eq!(owner.email, ada.email);
    assert_eq!(owner.organization_id, acme.id);
    assert_eq!(store.get_organization(&acme.id).await?, acme);

    // Unique name: AlreadyExists, and nothing of the failed attempt remains.
    assert_err(
        org(store, "acme", &ada).await,
        "AlreadyExists(Organization)",
    );
    let page = store
        .list_organizations(Some(&ada.id), &PageRequest::first(50))
        .await?;
    assert_eq!(page.items.len(), 1);
    assert_eq!(store.memberships_of_user(&ada.id).await?.len(), 1);

    // Unknown owner.
    let ghost = User {
        id: "00000000-0000-7000-8000-000000000000".into(),
        ..ada.clone()
    };
    assert_err(org(store, "ghosts", &ghost).await, "NotFound(User)");

    // Update with the current etag, then with the stale one.
    let renamed = store
        .update_organization(
            &acme.id,
            Some(&acme.etag),
            &OrganizationChanges {
                name: Some("acme-corp".into()),
                display_name: None,
            },
        )
        .await?;
    assert_eq!(renamed.name, "acme-corp");
    assert_eq!(renamed.display_name, acme.display_name);
    assert_ne!(renamed.etag, acme.etag);
    assert!(renamed.update_time >= acme.update_time);
    assert_err(
        store
            .update_organization(
                &acme.id,
                Some(&acme.etag),
                &OrganizationChanges {
                    display_name: Some("lost update".into()),
                    ..Default::default()
                },
            )
            .await,
        "EtagMismatch(Organization)",
    );
    assert_eq!(store.get_organization(&acme.id).await?, renamed);

    // Renaming onto a taken name.
    let (globex, _) = org(store, "globex", &ada).await?;
    assert_err(
        store
            .update_organization(
                &globex.id,
                None,
                &OrganizationChanges {
                    name: Some("acme-corp".into()),
                    ..Default::default()
                },
            )
            .await,
        "AlreadyExists(Organization)",
    );

    assert_err(
        store
            .update_organization("missing", None, &OrganizationChanges::default())
            .await,
        "NotFound(Organization)",
    );

    // Delete: stale etag refused, then deleted, then gone.
    assert_err(
        store.delete_organization(&globex.id, Some("stale")).await,
        "EtagMismatch(Organization)",
    );
    store
        .delete_organization(&globex.id, Some(&globex.etag))
        .await?;
    assert_err(
        store.get_organization(&globex.id).await,
        "NotFound(Organization)",
    );
    assert_err(
        store.delete_organization(&globex.id, None).await,
        "NotFound(Organization)",
    );
    // The name is free again.
    org(store, "globex", &ada).await?;
    Ok(())
}

async fn organizations_are_listed_per_member(store: &Store) -> TestResult {
    let ada = user(store, "ada").await?;
    let bob = user(store, "bob").await?;
    let (a1, _) = org(store, "a1", &ada).await?;
    let (_a2, _) = org(store, "a2", &ada).await?;
    let (b1, _) = org(store, "b1", &bob).await?;
    join(store, &b1, &ada, BuiltinRole::Viewer).await?;

    let names = |orgs: &[Organization]| orgs.iter().map(|o| o.name.clone()).collect::<Vec<_>>();
    let of_ada = store
        .list_organizations(Some(&ada.id), &PageRequest::first(50))
        .await?;
    assert_eq!(names(&of_ada.items), ["a1", "a2", "b1"]);
    assert_eq!(of_ada.next, None);
    let of_bob = store
        .list_organizations(Some(&bob.id), &PageRequest::first(50))
        .await?;
    assert_eq!(names(&of_bob.items), ["b1"]);
    let all = store
        .list_organizations(None, &PageRequest::first(50))
        .await?;
    assert_eq!(names(&all.items), ["a1", "a2", "b1"]);

    let memberships = store.memberships_of_user(&ada.id).await?;
    let summary: Vec<_> = memberships
        .iter()
        .map(|m| (m.organization_name.as_str(), m.role.clone()))
        .collect();
    assert_eq!(
        summary,
        [
            ("a1", RoleRef::Builtin(BuiltinRole::Owner)),
            ("a2", RoleRef::Builtin(BuiltinRole::Owner)),
            ("b1", RoleRef::Builtin(BuiltinRole::Viewer)),
        ]
    );
    assert_eq!(
        store.get_member_by_user(&a1.id, &ada.id).await?.id,
        memberships[0].member_id
    );
    assert_err(
        store.get_member_by_user(&a1.id, &bob.id).await,
        "NotFound(Member)",
    );
    Ok(())
}

async fn listings_never_cross_organizations(store: &Store) -> TestResult {
    let ada = user(store, "ada").await?;
    let bob = user(store, "bob").await?;
    let (a, _) = org(store, "org-a", &ada).await?;
    let (b, _) = org(store, "org-b", &bob).await?;

    // The same names in both organizations: names are unique per organization only.
    for o in [&a, &b] {
        for i in 0..3 {
            let role = new_role(store, o, &format!("role-{i}")).await?;
            new_token(store, o, &format!("token-{i}"), RoleRef::Custom(role.id)).await?;
            invite(
                store,
                o,
                &format!("guest{i}@example.com"),
                RoleRef::Builtin(BuiltinRole::Viewer),
                in_days(3),
            )
            .await?;
            store
                .insert_audit_event(&audit(o, "identity.roles.write", now()))
                .await?;
        }
    }
    let carol = user(store, "carol").await?;
    join(store, &a, &carol, BuiltinRole::Admin).await?;

    for (o, other) in [(&a, &b), (&b, &a)] {
        let page = PageRequest::first(500);
        let members = store
            .list_members(&o.id, None, &PageRequest::first(500))
            .await?;
        assert!(members.items.iter().all(|m| m.organization_id == o.id));
        let roles = store.list_roles(&o.id, &page).await?;
        assert_eq!(roles.items.len(), 3);
        assert!(roles.items.iter().all(|r| r.organization_id == o.id));
        let tokens = store.list_api_tokens(&o.id, &page).await?;
        assert_eq!(tokens.items.len(), 3);
        assert!(tokens.items.iter().all(|t| t.organization_id == o.id));
        let invitations = store
            .list_invitations(&o.id, None, &PageRequest::first(500))
            .await?;
        assert!(invitations.items.iter().all(|i| i.organization_id == o.id));
        let events = store
            .list_audit_events(&o.id, &AuditFilter::default(), &PageRequest::first(500))
            .await?;
        assert_eq!(events.items.len(), 3);
        assert!(events.items.iter().all(|e| e.organization_id == o.id));

        // A custom role of the other organization cannot be given here.
        let foreign_role = store.list_roles(&other.id, &page).await?.items.remove(0);
        let owner = store
            .list_members(
                &o.id,
                Some(&RoleRef::Builtin(BuiltinRole::Owner)),
                &PageRequest::first(5),
            )
            .await?;
        assert_eq!(owner.items.len(), 1);
        assert_err(
            new_token(
                store,
                o,
                "foreign",
                RoleRef::Custom(foreign_role.id.clone()),
            )
            .await,
            "NotFound(Role)",
        );
        assert_err(
            invite(
                store,
                o,
                "x@example.com",
                RoleRef::Custom(foreign_role.id.clone()),
                in_days(1),
            )
            .await,
            "NotFound(Role)",
        );
    }
    let a_members = store
        .list_members(&a.id, None, &PageRequest::first(500))
        .await?;
    assert_eq!(a_members.items.len(), 2);
    let carol_in_a = a_members
        .items
        .iter()
        .find(|m| m.user_id == carol.id)
        .ok_or("carol")?;
    let foreign_role = store
        .list_roles(&b.id, &PageRequest::first(1))
        .await?
        .items
        .remove(0);
    assert_err(
        store
            .update_member_role(&carol_in_a.id, &RoleRef::Custom(foreign_role.id), None)
            .await,
        "NotFound(Role)",
    );
    Ok(())
}

async fn pagination_visits_every_row_once(store: &Store) -> TestResult {
    const N: usize = 23;
    let ada = user(store, "ada").await?;
    let (o, _) = org(store, "paged", &ada).await?;
    // Noise in another organization, which must never show up.
    let (noise, _) = org(store, "noise", &ada).await?;
    let base = now();
    for i in 0..N {
        // Names out of insertion order, so order by name is not order by id.
        let name = format!("n{:02}", (i * 7) % N);
        new_role(store, &o, &name).await?;
        new_token(store, &o, &name, RoleRef::Builtin(BuiltinRole::Viewer)).await?;
        new_role(store, &noise, &name).await?;
        let someone = user(store, &format!("u{name}")).await?;
        join(store, &o, &someone, BuiltinRole::Viewer).await?;
        invite(
            store,
            &o,
            &format!("pending{i}@example.com"),
            RoleRef::Builtin(BuiltinRole::Viewer),
            in_days(1),
        )
        .await?;
        // Several events share a time, so the id must break ties.
        let at = base - TimeDelta::seconds((i / 3) as i64);
        store
            .insert_audit_event(&audit(&o, "identity.roles.write", at))
            .await?;
        store
            .insert_audit_event(&audit(&noise, "identity.roles.write", at))
            .await?;
    }

    let oid = o.id.as_str();
    let ada_id = ada.id.as_str();
    for size in [1u64, 2, 5, 7, 22, 23, 24, 500] {
        let roles = collect_all(size, |p| async move { store.list_roles(oid, &p).await }).await?;
        assert_sorted_unique(roles.iter().map(|r| r.name.clone()).collect(), N, false)?;
        assert!(roles.iter().all(|r| r.organization_id == o.id));

        let tokens = collect_all(
            size,
            |p| async move { store.list_api_tokens(oid, &p).await },
        )
        .await?;
        assert_sorted_unique(tokens.iter().map(|t| t.name.clone()).collect(), N, false)?;

        let members = collect_all(
            size,
            |p| async move { store.list_members(oid, None, &p).await },
        )
        .await?;
        assert_sorted_unique(
            members
                .iter()
                .map(|m| format!("{}/{}", m.email, m.id))
                .collect(),
            N + 1,
            false,
        )?;

        // N accepted (from `join`) plus N pending.
        let invitations = collect_all(size, |p| async move {
            store.list_invitations(oid, None, &p).await
        })
        .await?;
        assert_sorted_unique(
            invitations.iter().map(|i| i.id.clone()).collect(),
            2 * N,
            true,
        )?;
        let pending = collect_all(size, |p| async move {
            store
                .list_invitations(oid, Some(InvitationStatus::Pending), &p)
                .await
        })
        .await?;
        assert_eq!(pending.len(), N);
        assert!(
            pending
                .iter()
                .all(|i| i.status == InvitationStatus::Pending)
        );

        let events = collect_all(size, |p| async move {
            store
                .list_audit_events(oid, &AuditFilter::default(), &p)
                .await
        })
        .await?;
        assert_eq!(events.len(), N);
        let ids: HashSet<_> = events.iter().map(|e| e.id.clone()).collect();
        assert_eq!(ids.len(), N, "an event was returned twice");
        for pair in events.windows(2) {
            let newer = (pair[0].event_time, &pair[0].id);
            let older = (pair[1].event_time, &pair[1].id);
            assert!(newer > older, "not newest first: {newer:?} then {older:?}");
        }
    }

    let orgs = collect_all(1, |p| async move {
        store.list_organizations(Some(ada_id), &p).await
    })
    .await?;
    assert_sorted_unique(orgs.iter().map(|o| o.name.clone()).collect(), 2, false)?;
    // An empty listing is one page without a cursor.
    let empty = store
        .list_roles("no-such-org", &PageRequest::first(0))
        .await?;
    assert!(empty.items.is_empty() && empty.next.is_none());
    Ok(())
}

/// `keys` has `count` distinct values, ascending (or descending).
fn assert_sorted_unique(keys: Vec<String>, count: usize, descending: bool) -> TestResult {
    assert_eq!(keys.len(), count, "{keys:?}");
    let distinct: HashSet<_> = keys.iter().collect();
    assert_eq!(distinct.len(), count, "a row was returned twice: {keys:?}");
    let mut sorted = keys.clone();
    sorted.sort();
    if descending {
        sorted.reverse();
    }
    assert_eq!(keys, sorted);
    Ok(())
}

async fn owners(store: &Store, o: &Organization) -> Result<Vec<Member>, StoreError> {
    Ok(store
        .list_members(
            &o.id,
            Some(&RoleRef::Builtin(BuiltinRole::Owner)),
            &PageRequest::first(500),
        )
        .await?
        .items)
}

async fn transfer_leaves_exactly_one_owner(store: &Store) -> TestResult {
    let ada = user(store, "ada").await?;
    let bob = user(store, "bob").await?;
    let (o, ada_member) = org(store, "acme", &ada).await?;
    let bob_member = join(store, &o, &bob, BuiltinRole::Viewer).await?;

    // Stale etag: refused, nothing changes.
    assert_err(
        store
            .transfer_ownership(&o.id, &bob_member.id, Some("stale"))
            .await,
        "EtagMismatch(Organization)",
    );
    assert_eq!(owners(store, &o).await?, vec![ada_member.clone()]);

    let done = store
        .transfer_ownership(&o.id, &bob_member.id, Some(&o.etag))
        .await?;
    assert_eq!(done.organization.owner_user_id, bob.id);
    assert_ne!(done.organization.etag, o.etag);
    assert_eq!(done.previous_owner.id, ada_member.id);
    assert_eq!(
        done.previous_owner.role,
        RoleRef::Builtin(BuiltinRole::Admin)
    );
    assert_eq!(done.new_owner.id, bob_member.id);
    assert_eq!(done.new_owner.role, RoleRef::Builtin(BuiltinRole::Owner));
    let now_owners = owners(store, &o).await?;
    assert_eq!(now_owners.len(), 1);
    assert_eq!(now_owners[0].user_id, bob.id);
    assert_eq!(store.get_organization(&o.id).await?, done.organization);

    // The owner again, a member of another organization, no one.
    assert_err(
        store.transfer_ownership(&o.id, &bob_member.id, None).await,
        "FailedPrecondition(AlreadyOwner)",
    );
    let (other, other_owner) = org(store, "other", &ada).await?;
    assert_err(
        store.transfer_ownership(&o.id, &other_owner.id, None).await,
        "NotFound(Member)",
    );
    assert_err(
        store
            .transfer_ownership("missing", &bob_member.id, None)
            .await,
        "NotFound(Organization)",
    );
    assert_eq!(owners(store, &other).await?.len(), 1);

    // And back, with a custom-role member: the custom role is replaced.
    let role = new_role(store, &o, "ops").await?;
    store
        .update_member_role(&ada_member.id, &RoleRef::Custom(role.id.clone()), None)
        .await?;
    let back = store
        .transfer_ownership(&o.id, &ada_member.id, None)
        .await?;
    assert_eq!(back.new_owner.role, RoleRef::Builtin(BuiltinRole::Owner));
    assert_eq!(owners(store, &o).await?.len(), 1);
    Ok(())
}

async fn concurrent_transfers_leave_exactly_one_owner(store: &Store) -> TestResult {
    let ada = user(store, "ada").await?;
    let (o, _) = org(store, "acme", &ada).await?;
    let mut candidates = Vec::new();
    for i in 0..4 {
        let u = user(store, &format!("c{i}")).await?;
        candidates.push(join(store, &o, &u, BuiltinRole::Admin).await?);
    }
    let mut tasks = Vec::new();
    for member in &candidates {
        let store = store.clone();
        let org_id = o.id.clone();
        let member_id = member.id.clone();
        tasks.push(tokio::spawn(async move {
            store.transfer_ownership(&org_id, &member_id, None).await
        }));
    }
    for task in tasks {
        // Each transfer either wins or is refused cleanly; none may leave two owners.
        match task.await? {
            Ok(_) | Err(StoreError::FailedPrecondition(Precondition::AlreadyOwner)) => {}
            Err(err) => return Err(err.into()),
        }
    }
    let final_owners = owners(store, &o).await?;
    assert_eq!(final_owners.len(), 1);
    assert_eq!(
        store.get_organization(&o.id).await?.owner_user_id,
        final_owners[0].user_id
    );
    Ok(())
}

async fn owner_is_immutable_outside_transfers(store: &Store) -> TestResult {
    let ada = user(store, "ada").await?;
    let bob = user(store, "bob").await?;
    let (o, owner) = org(store, "acme", &ada).await?;
    let bob_member = join(store, &o, &bob, BuiltinRole::Viewer).await?;
    assert_err(
        store
            .update_member_role(&owner.id, &RoleRef::Builtin(BuiltinRole::Admin), None)
            .await,
        "FailedPrecondition(OwnerImmutable)",
    );
    assert_err(
        store
            .update_member_role(&bob_member.id, &RoleRef::Builtin(BuiltinRole::Owner), None)
            .await,
        "FailedPrecondition(OwnerImmutable)",
    );
    assert_err(
        store.remove_member(&owner.id, None).await,
        "FailedPrecondition(OwnerImmutable)",
    );
    assert_eq!(owners(store, &o).await?, vec![owner]);
    Ok(())
}

async fn members_roles_and_removal(store: &Store) -> TestResult {
    let ada = user(store, "ada").await?;
    let bob = user(store, "bob").await?;
    let (o, _) = org(store, "acme", &ada).await?;
    let bob_member = join(store, &o, &bob, BuiltinRole::Viewer).await?;
    assert_eq!(store.get_member(&bob_member.id).await?, bob_member);

    let devops = store
        .update_member_role(
            &bob_member.id,
            &RoleRef::Builtin(BuiltinRole::Devops),
            Some(&bob_member.etag),
        )
        .await?;
    assert_eq!(devops.role, RoleRef::Builtin(BuiltinRole::Devops));
    assert_ne!(devops.etag, bob_member.etag);
    assert_err(
        store
            .update_member_role(
                &bob_member.id,
                &RoleRef::Builtin(BuiltinRole::Billing),
                Some(&bob_member.etag),
            )
            .await,
        "EtagMismatch(Member)",
    );
    let role = new_role(store, &o, "deployers").await?;
    let custom = store
        .update_member_role(&bob_member.id, &RoleRef::Custom(role.id.clone()), None)
        .await?;
    assert_eq!(custom.role, RoleRef::Custom(role.id.clone()));
    let holders = store
        .list_members(
            &o.id,
            Some(&RoleRef::Custom(role.id.clone())),
            &PageRequest::first(10),
        )
        .await?;
    assert_eq!(holders.items, vec![custom.clone()]);
    assert_err(
        store
            .update_member_role(
                &bob_member.id,
                &RoleRef::Custom("no-such-role".into()),
                None,
            )
            .await,
        "NotFound(Role)",
    );
    assert_err(
        store
            .update_member_role("missing", &RoleRef::Builtin(BuiltinRole::Viewer), None)
            .await,
        "NotFound(Member)",
    );

    assert_err(
        store.remove_member(&bob_member.id, Some("stale")).await,
        "EtagMismatch(Member)",
    );
    store
        .remove_member(&bob_member.id, Some(&custom.etag))
        .await?;
    assert_err(store.get_member(&bob_member.id).await, "NotFound(Member)");
    assert_err(
        store.remove_member(&bob_member.id, None).await,
        "NotFound(Member)",
    );
    assert!(store.memberships_of_user(&bob.id).await?.is_empty());
    Ok(())
}

async fn invitation_accept_is_atomic(store: &Store) -> TestResult {
    let ada = user(store, "ada").await?;
    let bob = user(store, "bob").await?;
    let (o, _) = org(store, "acme", &ada).await?;
    let inv = invite_with_token(
        store,
        &o,
        "Bob@Example.com",
        RoleRef::Builtin(BuiltinRole::Devops),
        in_days(7),
        "slpi_bob",
    )
    .await?;
    assert_eq!(inv.status, InvitationStatus::Pending);
    assert_eq!(inv.email, "Bob@Example.com", "kept as written");
    assert_eq!(
        store
            .find_invitation_by_token_hash(&hash("slpi_bob"))
            .await?,
        inv
    );
    assert_err(
        store
            .find_invitation_by_token_hash(&hash("slpi_other"))
            .await,
        "NotFound(Invitation)",
    );

    // Ada is already a member: the membership insert fails, so the invitation must not be
    // consumed either.
    assert_err(
        store.accept_invitation(&inv.id, &ada.id).await,
        "AlreadyExists(Member)",
    );
    let untouched = store.get_invitation(&inv.id).await?;
    assert_eq!(untouched, inv);
    assert_eq!(
        store
            .list_members(&o.id, None, &PageRequest::first(10))
            .await?
            .items
            .len(),
        1
    );

    // An unknown user: the same.
    assert_err(
        store.accept_invitation(&inv.id, "no-such-user").await,
        "NotFound(User)",
    );
    assert_eq!(store.get_invitation(&inv.id).await?, inv);

    let (member, accepted) = store.accept_invitation(&inv.id, &bob.id).await?;
    assert_eq!(member.user_id, bob.id);
    assert_eq!(member.organization_id, o.id);
    assert_eq!(member.role, RoleRef::Builtin(BuiltinRole::Devops));
    assert_eq!(accepted.status, InvitationStatus::Accepted);
    assert_eq!(accepted.member_id.as_deref(), Some(member.id.as_str()));
    assert!(accepted.close_time.is_some());
    assert_eq!(store.get_invitation(&inv.id).await?, accepted);

    assert_err(
        store.accept_invitation(&inv.id, &bob.id).await,
        "FailedPrecondition(InvitationAlreadyAccepted)",
    );
    assert_err(
        store.revoke_invitation(&inv.id).await,
        "FailedPrecondition(InvitationAlreadyAccepted)",
    );
    assert_err(
        store.accept_invitation("missing", &bob.id).await,
        "NotFound(Invitation)",
    );

    // Inviting someone who is a member now, under any case of their email.
    assert_err(
        invite(
            store,
            &o,
            "BOB@example.com",
            RoleRef::Builtin(BuiltinRole::Viewer),
            in_days(1),
        )
        .await,
        "AlreadyExists(Member)",
    );
    Ok(())
}

async fn invitation_states(store: &Store) -> TestResult {
    let ada = user(store, "ada").await?;
    let carol = user(store, "carol").await?;
    let (o, _) = org(store, "acme", &ada).await?;

    // One pending invitation per email, case-insensitively.
    let first = invite(
        store,
        &o,
        "carol@example.com",
        RoleRef::Builtin(BuiltinRole::Viewer),
        in_days(7),
    )
    .await?;
    assert_err(
        invite(
            store,
            &o,
            "CAROL@example.com",
            RoleRef::Builtin(BuiltinRole::Admin),
            in_days(6),
        )
        .await,
        "AlreadyExists(Invitation)",
    );
    // Revoke: then it is final, and the email can be invited again.
    let revoked = store.revoke_invitation(&first.id).await?;
    assert_eq!(revoked.status, InvitationStatus::Revoked);
    assert!(revoked.close_time.is_some());
    assert_err(
        store.revoke_invitation(&first.id).await,
        "FailedPrecondition(InvitationRevoked)",
    );
    assert_err(
        store.accept_invitation(&first.id, &carol.id).await,
        "FailedPrecondition(InvitationRevoked)",
    );

    // Expired: reads as expired at once, refuses acceptance, and stops blocking the email.
    let stale = invite(
        store,
        &o,
        "carol@example.com",
        RoleRef::Builtin(BuiltinRole::Viewer),
        now() - TimeDelta::seconds(1),
    )
    .await?;
    assert_eq!(stale.status, InvitationStatus::Expired);
    assert_err(
        store.accept_invitation(&stale.id, &carol.id).await,
        "FailedPrecondition(InvitationExpired)",
    );
    assert_err(
        store.revoke_invitation(&stale.id).await,
        "FailedPrecondition(InvitationExpired)",
    );
    let expired = store
        .list_invitations(
            &o.id,
            Some(InvitationStatus::Expired),
            &PageRequest::first(10),
        )
        .await?;
    assert_eq!(
        expired.items.iter().map(|i| &i.id).collect::<Vec<_>>(),
        [&stale.id]
    );
    let pending = store
        .list_invitations(
            &o.id,
            Some(InvitationStatus::Pending),
            &PageRequest::first(10),
        )
        .await?;
    assert!(pending.items.is_empty());

    let fresh = invite(
        store,
        &o,
        "carol@example.com",
        RoleRef::Builtin(BuiltinRole::Billing),
        in_days(1),
    )
    .await?;
    assert_eq!(fresh.status, InvitationStatus::Pending);
    // Creating `fresh` made the stale row durable.
    assert_eq!(store.expire_invitations(now()).await?, 0);
    let soon = invite(
        store,
        &o,
        "dave@example.com",
        RoleRef::Builtin(BuiltinRole::Viewer),
        now() + TimeDelta::milliseconds(1),
    )
    .await?;
    assert_eq!(
        store
            .expire_invitations(now() + TimeDelta::seconds(1))
            .await?,
        1
    );
    assert_eq!(
        store.get_invitation(&soon.id).await?.status,
        InvitationStatus::Expired
    );

    let revoked_list = store
        .list_invitations(
            &o.id,
            Some(InvitationStatus::Revoked),
            &PageRequest::first(10),
        )
        .await?;
    assert_eq!(revoked_list.items.len(), 1);
    // Newest first.
    let all = store
        .list_invitations(&o.id, None, &PageRequest::first(10))
        .await?;
    assert_eq!(all.items.first().map(|i| &i.id), Some(&soon.id));
    assert_eq!(all.items.last().map(|i| &i.id), Some(&first.id));

    let (member, _) = store.accept_invitation(&fresh.id, &carol.id).await?;
    assert_eq!(member.role, RoleRef::Builtin(BuiltinRole::Billing));
    Ok(())
}

async fn concurrent_accepts_create_one_member(store: &Store) -> TestResult {
    let ada = user(store, "ada").await?;
    let (o, _) = org(store, "acme", &ada).await?;
    let inv = invite(
        store,
        &o,
        "shared@example.com",
        RoleRef::Builtin(BuiltinRole::Viewer),
        in_days(1),
    )
    .await?;
    let mut tasks = Vec::new();
    for i in 0..4 {
        let u = user(store, &format!("claimant{i}")).await?;
        let store = store.clone();
        let id = inv.id.clone();
        tasks.push(tokio::spawn(async move {
            store.accept_invitation(&id, &u.id).await
        }));
    }
    let mut winners = 0;
    for task in tasks {
        match task.await? {
            Ok(_) => winners += 1,
            Err(StoreError::FailedPrecondition(Precondition::InvitationAlreadyAccepted)) => {}
            Err(err) => return Err(err.into()),
        }
    }
    assert_eq!(winners, 1);
    let members = store
        .list_members(&o.id, None, &PageRequest::first(10))
        .await?;
    assert_eq!(members.items.len(), 2);
    Ok(())
}

async fn roles_crud_and_in_use(store: &Store) -> TestResult {
    let ada = user(store, "ada").await?;
    let bob = user(store, "bob").await?;
    let (o, _) = org(store, "acme", &ada).await?;
    let role = new_role(store, &o, "deployers").await?;
    assert_eq!(
        role.grants,
        serde_json::json!({"default_cluster_permission": "VIEWER"})
    );
    assert_eq!(store.get_role(&role.id).await?, role);
    assert_err(
        new_role(store, &o, "deployers").await,
        "AlreadyExists(Role)",
    );
    let missing_org = Organization {
        id: "no-such-org".into(),
        ..o.clone()
    };
    assert_err(
        new_role(store, &missing_org, "x").await,
        "NotFound(Organization)",
    );

    let grants = serde_json::json!({
        "project_grants": [{"project_id": "p1", "permissions": [{"environment_mode": "PRODUCTION", "permission": "DEPLOYER"}]}],
    });
    let updated = store
        .update_role(
            &role.id,
            Some(&role.etag),
            &RoleChanges {
                description: Some("deploys p1".into()),
                grants: Some(grants.clone()),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(updated.grants, grants);
    assert_eq!(updated.name, "deployers");
    assert_eq!(updated.description, "deploys p1");
    assert_err(
        store
            .update_role(&role.id, Some(&role.etag), &RoleChanges::default())
            .await,
        "EtagMismatch(Role)",
    );
    let other = new_role(store, &o, "others").await?;
    assert_err(
        store
            .update_role(
                &other.id,
                None,
                &RoleChanges {
                    name: Some("deployers".into()),
                    ..Default::default()
                },
            )
            .await,
        "AlreadyExists(Role)",
    );

    // In use by a member, then a token, then a pending invitation.
    let bob_member = join(store, &o, &bob, BuiltinRole::Viewer).await?;
    store
        .update_member_role(&bob_member.id, &RoleRef::Custom(role.id.clone()), None)
        .await?;
    assert_err(
        store.delete_role(&role.id, None).await,
        "FailedPrecondition(RoleInUse)",
    );
    store
        .update_member_role(&bob_member.id, &RoleRef::Builtin(BuiltinRole::Viewer), None)
        .await?;
    let token = new_token(store, &o, "ci", RoleRef::Custom(role.id.clone())).await?;
    assert_err(
        store.delete_role(&role.id, None).await,
        "FailedPrecondition(RoleInUse)",
    );
    store.revoke_api_token(&token.id).await?;
    let inv = invite(
        store,
        &o,
        "eve@example.com",
        RoleRef::Custom(role.id.clone()),
        in_days(1),
    )
    .await?;
    assert_err(
        store.delete_role(&role.id, None).await,
        "FailedPrecondition(RoleInUse)",
    );
    store.revoke_invitation(&inv.id).await?;

    // The refused deletions changed nothing; a stale etag is refused; then it goes.
    // (Their etag bumps were rolled back with them.)
    let current = store.get_role(&role.id).await?;
    assert_eq!(current, updated);
    assert_err(
        store.delete_role(&role.id, Some(&role.etag)).await,
        "EtagMismatch(Role)",
    );
    store.delete_role(&role.id, Some(&current.etag)).await?;
    assert_err(store.get_role(&role.id).await, "NotFound(Role)");
    assert_err(store.delete_role(&role.id, None).await, "NotFound(Role)");
    // A revoked invitation may still name the deleted role.
    assert_eq!(
        store.get_invitation(&inv.id).await?.role,
        RoleRef::Custom(role.id)
    );
    Ok(())
}

async fn api_tokens_lifecycle(store: &Store) -> TestResult {
    let ada = user(store, "ada").await?;
    let (o, _) = org(store, "acme", &ada).await?;
    let token = new_token(store, &o, "ci", RoleRef::Builtin(BuiltinRole::Devops)).await?;
    assert_eq!(token.last_use_time, None);
    assert_eq!(token.creator, admin());
    assert_eq!(store.get_api_token(&token.id).await?, token);
    let secret = hash(&format!("{}/ci", o.id));
    assert_eq!(store.find_api_token_by_secret_hash(&secret).await?, token);
    assert_err(
        store.find_api_token_by_secret_hash(&hash("unknown")).await,
        "NotFound(ApiToken)",
    );
    assert_err(
        new_token(store, &o, "ci", RoleRef::Builtin(BuiltinRole::Viewer)).await,
        "AlreadyExists(ApiToken)",
    );
    let missing_org = Organization {
        id: "no-such-org".into(),
        ..o.clone()
    };
    assert_err(
        new_token(
            store,
            &missing_org,
            "x",
            RoleRef::Builtin(BuiltinRole::Viewer),
        )
        .await,
        "NotFound(Organization)",
    );

    // Expiry is kept as given (to the microsecond).
    let expire = now() + TimeDelta::hours(1);
    let expiring = store
        .create_api_token(&NewApiToken {
            organization_id: o.id.clone(),
            name: "short".into(),
            description: String::new(),
            role: RoleRef::Builtin(BuiltinRole::Viewer),
            secret_hash: hash("short"),
            secret_hint: "slp_wxyz".into(),
            expire_time: Some(expire),
            creator: admin(),
        })
        .await?;
    assert_eq!(expiring.expire_time, Some(expire));

    // Last use: written at most once per interval, never backwards.
    let minute = TimeDelta::minutes(1);
    let t0 = now();
    assert!(store.touch_api_token(&token.id, t0, minute).await?);
    assert!(
        !store
            .touch_api_token(&token.id, t0 + TimeDelta::seconds(30), minute)
            .await?
    );
    assert!(
        !store
            .touch_api_token(&token.id, t0 - TimeDelta::hours(1), minute)
            .await?
    );
    assert!(
        store
            .touch_api_token(&token.id, t0 + TimeDelta::seconds(61), minute)
            .await?
    );
    assert_eq!(
        store.get_api_token(&token.id).await?.last_use_time,
        Some(t0 + TimeDelta::seconds(61))
    );
    assert!(!store.touch_api_token("missing", t0, minute).await?);

    let revoked = store.revoke_api_token(&token.id).await?;
    assert_eq!(revoked.id, token.id);
    assert_err(
        store.find_api_token_by_secret_hash(&secret).await,
        "NotFound(ApiToken)",
    );
    assert_err(
        store.revoke_api_token(&token.id).await,
        "NotFound(ApiToken)",
    );
    let left = store
        .list_api_tokens(&o.id, &PageRequest::first(10))
        .await?;
    assert_eq!(left.items, vec![expiring]);
    Ok(())
}

async fn audit_filters(store: &Store) -> TestResult {
    let ada = user(store, "ada").await?;
    let (o, _) = org(store, "acme", &ada).await?;
    let oid = o.id.as_str();
    let t = now();
    let mut deploy = audit(&o, "deploy.environments.deploy", t - TimeDelta::minutes(3));
    deploy.target = AuditTarget {
        kind: Some("ENVIRONMENT".into()),
        id: Some("env-1".into()),
        project_id: Some("proj-1".into()),
        environment_id: Some("env-1".into()),
        environment_mode: Some("PRODUCTION".into()),
        cluster_id: None,
    };
    deploy.actor = PrincipalRef {
        kind: PrincipalKind::ApiToken,
        id: "tok-1".into(),
        display_name: "ci".into(),
    };
    let deploy = store.insert_audit_event(&deploy).await?;
    let mut variable = audit(&o, "catalog.variables.write", t - TimeDelta::minutes(2));
    variable.target = AuditTarget {
        kind: Some("VARIABLE".into()),
        project_id: Some("proj-1".into()),
        ..AuditTarget::default()
    };
    variable.status_code = "PERMISSION_DENIED".into();
    variable.error_reason = "PERMISSION_DENIED".into();
    let variable = store.insert_audit_event(&variable).await?;
    // `_` must not act as a wildcard in prefix filters.
    let underscore = store
        .insert_audit_event(&audit(
            &o,
            "identity.api_tokens.write",
            t - TimeDelta::minutes(1),
        ))
        .await?;
    let lookalike = store
        .insert_audit_event(&audit(&o, "identity.apiXtokens.write", t))
        .await?;

    let ids = |events: Vec<AuditEvent>| events.into_iter().map(|e| e.id).collect::<Vec<_>>();
    let list = |filter: AuditFilter| async move {
        store
            .list_audit_events(oid, &filter, &PageRequest::first(100))
            .await
            .map(|p| p.items)
    };

    assert_eq!(
        ids(list(AuditFilter::default()).await?),
        [
            lookalike.id.as_str(),
            underscore.id.as_str(),
            variable.id.as_str(),
            deploy.id.as_str()
        ]
    );
    assert_eq!(list(AuditFilter::default()).await?[3], deploy, "round trip");
    assert_eq!(
        ids(list(AuditFilter {
            actor: Some((PrincipalKind::ApiToken, "tok-1".into())),
            ..Default::default()
        })
        .await?),
        [deploy.id.as_str()]
    );
    assert!(
        list(AuditFilter {
            actor: Some((PrincipalKind::User, "tok-1".into())),
            ..Default::default()
        })
        .await?
        .is_empty(),
        "the kind is part of the actor"
    );
    assert_eq!(
        ids(list(AuditFilter {
            action: Some(ActionFilter::Exact("catalog.variables.write".into())),
            ..Default::default()
        })
        .await?),
        [variable.id.as_str()]
    );
    assert_eq!(
        ids(list(AuditFilter {
            action: Some(ActionFilter::Prefix("identity.api_".into())),
            ..Default::default()
        })
        .await?),
        [underscore.id.as_str()]
    );
    assert_eq!(
        ids(list(AuditFilter {
            action: Some(ActionFilter::Prefix("deploy.".into())),
            ..Default::default()
        })
        .await?),
        [deploy.id.as_str()]
    );
    assert!(
        list(AuditFilter {
            action: Some(ActionFilter::Prefix("DEPLOY.".into())),
            ..Default::default()
        })
        .await?
        .is_empty(),
        "prefixes are case-sensitive on every backend"
    );
    assert_eq!(
        ids(list(AuditFilter {
            target: AuditTarget {
                project_id: Some("proj-1".into()),
                ..Default::default()
            },
            ..Default::default()
        })
        .await?),
        [variable.id.as_str(), deploy.id.as_str()]
    );
    assert_eq!(
        ids(list(AuditFilter {
            target: AuditTarget {
                kind: Some("ENVIRONMENT".into()),
                id: Some("env-1".into()),
                ..Default::default()
            },
            ..Default::default()
        })
        .await?),
        [deploy.id.as_str()]
    );
    // Start inclusive, end exclusive.
    assert_eq!(
        ids(list(AuditFilter {
            start_time: Some(variable.event_time),
            end_time: Some(lookalike.event_time),
            ..Default::default()
        })
        .await?),
        [underscore.id.as_str(), variable.id.as_str()]
    );
    // Filters combine with AND.
    assert!(
        list(AuditFilter {
            action: Some(ActionFilter::Prefix("deploy.".into())),
            start_time: Some(variable.event_time),
            ..Default::default()
        })
        .await?
        .is_empty()
    );
    // A filtered listing pages too.
    let paged = collect_all(1, |p| {
        let filter = AuditFilter {
            action: Some(ActionFilter::Prefix("identity.".into())),
            ..Default::default()
        };
        async move { store.list_audit_events(oid, &filter, &p).await }
    })
    .await?;
    assert_eq!(ids(paged), [lookalike.id.as_str(), underscore.id.as_str()]);

    // Retention.
    assert_eq!(
        store
            .delete_audit_events_before(variable.event_time)
            .await?,
        1
    );
    assert_eq!(list(AuditFilter::default()).await?.len(), 3);
    Ok(())
}

async fn delete_organization_removes_what_it_owns(store: &Store) -> TestResult {
    let ada = user(store, "ada").await?;
    let bob = user(store, "bob").await?;
    let (o, _) = org(store, "doomed", &ada).await?;
    let (kept, _) = org(store, "kept", &ada).await?;
    let role = new_role(store, &o, "ops").await?;
    let bob_member = join(store, &o, &bob, BuiltinRole::Viewer).await?;
    store
        .update_member_role(&bob_member.id, &RoleRef::Custom(role.id.clone()), None)
        .await?;
    new_token(store, &o, "ci", RoleRef::Custom(role.id.clone())).await?;
    let kept_token = new_token(store, &kept, "ci", RoleRef::Builtin(BuiltinRole::Viewer)).await?;
    let pending = invite(
        store,
        &o,
        "x@example.com",
        RoleRef::Custom(role.id.clone()),
        in_days(1),
    )
    .await?;
    store
        .insert_audit_event(&audit(&o, "identity.roles.write", now()))
        .await?;

    let current = store.get_organization(&o.id).await?;
    store
        .delete_organization(&o.id, Some(&current.etag))
        .await?;

    assert_err(store.get_role(&role.id).await, "NotFound(Role)");
    assert_err(store.get_member(&bob_member.id).await, "NotFound(Member)");
    assert_err(
        store.get_invitation(&pending.id).await,
        "NotFound(Invitation)",
    );
    assert_err(
        store
            .find_api_token_by_secret_hash(&hash(&format!("{}/ci", o.id)))
            .await,
        "NotFound(ApiToken)",
    );
    assert!(
        store
            .list_roles(&o.id, &PageRequest::first(10))
            .await?
            .items
            .is_empty()
    );
    // Users and other organizations stay; the audit log is kept for its retention.
    assert_eq!(store.get_user(&bob.id).await?.id, bob.id);
    assert_eq!(store.get_api_token(&kept_token.id).await?, kept_token);
    let names: Vec<_> = store
        .memberships_of_user(&ada.id)
        .await?
        .into_iter()
        .map(|m| m.organization_name)
        .collect();
    assert_eq!(names, ["kept"]);
    let events = store
        .list_audit_events(&o.id, &AuditFilter::default(), &PageRequest::first(10))
        .await?;
    assert_eq!(events.items.len(), 1);
    Ok(())
}

/// The invariants hold even for writes that bypass the store's checks: a second owner, a
/// member with no role or two, a custom role of another organization.
async fn database_enforces_invariants(store: &Store) -> TestResult {
    use slipway_db::sea_orm::ActiveModelTrait as _;
    use slipway_db::sea_orm::ActiveValue::Set;
    use slipway_identity::store::entity::membership;

    let ada = user(store, "ada").await?;
    let bob = user(store, "bob").await?;
    let (o, _) = org(store, "acme", &ada).await?;
    let (other, _) = org(store, "other", &ada).await?;
    let foreign_role = new_role(store, &other, "ops").await?;
    let row = |builtin: Option<&str>, custom: Option<&str>| membership::ActiveModel {
        id: Set(uuid::Uuid::now_v7().to_string()),
        organization_id: Set(o.id.clone()),
        user_id: Set(bob.id.clone()),
        builtin_role: Set(builtin.map(str::to_owned)),
        custom_role_id: Set(custom.map(str::to_owned)),
        create_time: Set(now()),
        update_time: Set(now()),
        etag: Set("e".into()),
    };
    let db = store.connection();

    let second_owner = row(Some("OWNER"), None).insert(db).await;
    assert!(
        second_owner
            .as_ref()
            .is_err_and(slipway_db::is_unique_violation),
        "{second_owner:?}"
    );
    assert!(row(None, None).insert(db).await.is_err(), "no role");
    assert!(
        row(Some("ADMIN"), Some(&foreign_role.id))
            .insert(db)
            .await
            .is_err(),
        "two roles"
    );
    let cross = row(None, Some(&foreign_role.id)).insert(db).await;
    assert!(
        cross
            .as_ref()
            .is_err_and(slipway_db::is_foreign_key_violation),
        "{cross:?}"
    );
    // Nothing of the refused writes remains; a proper row goes in.
    assert_eq!(owners(store, &o).await?.len(), 1);
    row(Some("VIEWER"), None).insert(db).await?;
    assert_eq!(
        store
            .list_members(&o.id, None, &PageRequest::first(10))
            .await?
            .items
            .len(),
        2
    );
    Ok(())
}
