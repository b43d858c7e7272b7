//! The audit log: record, list with filters, drop past retention.

use chrono::{DateTime, Utc};
use slipway_db::sea_orm::ActiveValue::Set;
use slipway_db::sea_orm::sea_query::{Expr, ExprTrait as _, Func};
use slipway_db::sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, Condition, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, QuerySelect as _,
};

use super::entity::audit_event;
use super::types::{
    ActionFilter, AuditCursor, AuditEvent, AuditFilter, AuditTarget, NewAuditEvent, Origin, Page,
    PageRequest, into_page, new_id, truncate_time,
};
use super::{Store, StoreError, StoreResult, principal_from_columns};

fn audit_event_from_model(m: audit_event::Model) -> StoreResult<AuditEvent> {
    Ok(AuditEvent {
        actor: principal_from_columns(&m.actor_kind, &m.actor_id, &m.actor_display_name)?,
        id: m.id,
        organization_id: m.organization_id,
        action: m.action,
        method: m.method,
        target: AuditTarget {
            kind: m.target_kind,
            id: m.target_id,
            project_id: m.target_project_id,
            environment_id: m.target_environment_id,
            environment_mode: m.target_environment_mode,
            cluster_id: m.target_cluster_id,
        },
        event_time: m.event_time,
        origin: Origin {
            ip_address: m.origin_ip,
            user_agent: m.origin_user_agent,
        },
        status_code: m.status_code,
        error_reason: m.error_reason,
    })
}

/// The filter conditions, all of which must hold.
fn filter_condition(filter: &AuditFilter) -> Condition {
    let mut cond = Condition::all();
    if let Some((kind, id)) = &filter.actor {
        cond = cond
            .add(audit_event::Column::ActorKind.eq(kind.as_str()))
            .add(audit_event::Column::ActorId.eq(id.as_str()));
    }
    match &filter.action {
        Some(ActionFilter::Exact(action)) => {
            cond = cond.add(audit_event::Column::Action.eq(action.as_str()));
        }
        Some(ActionFilter::Prefix(prefix)) => {
            // `substr(action, 1, n) = prefix` rather than `LIKE 'prefix%'`: `_` in action
            // names is a LIKE wildcard, and LIKE's case rules differ between PostgreSQL
            // and SQLite; equality of a substring means the same on both. The length is
            // an `i32` so PostgreSQL resolves `substr(text, int, int)`.
            let len = i32::try_from(prefix.chars().count()).unwrap_or(i32::MAX);
            let head = Func::cust("substr")
                .arg(Expr::col((
                    audit_event::Entity,
                    audit_event::Column::Action,
                )))
                .arg(1i32)
                .arg(len);
            cond = cond.add(Expr::expr(head).eq(prefix.as_str()));
        }
        None => {}
    }
    let target = &filter.target;
    for (value, column) in [
        (&target.kind, audit_event::Column::TargetKind),
        (&target.id, audit_event::Column::TargetId),
        (&target.project_id, audit_event::Column::TargetProjectId),
        (
            &target.environment_id,
            audit_event::Column::TargetEnvironmentId,
        ),
        (
            &target.environment_mode,
            audit_event::Column::TargetEnvironmentMode,
        ),
        (&target.cluster_id, audit_event::Column::TargetClusterId),
    ] {
        if let Some(value) = value {
            cond = cond.add(column.eq(value.as_str()));
        }
    }
    if let Some(start) = filter.start_time {
        cond = cond.add(audit_event::Column::EventTime.gte(truncate_time(start)));
    }
    if let Some(end) = filter.end_time {
        cond = cond.add(audit_event::Column::EventTime.lt(truncate_time(end)));
    }
    cond
}

impl Store {
    /// Records one call.
    pub async fn insert_audit_event(&self, new: &NewAuditEvent) -> StoreResult<AuditEvent> {
        audit_event::ActiveModel {
            id: Set(new_id()),
            organization_id: Set(new.organization_id.clone()),
            actor_kind: Set(new.actor.kind.as_str().to_owned()),
            actor_id: Set(new.actor.id.clone()),
            actor_display_name: Set(new.actor.display_name.clone()),
            action: Set(new.action.clone()),
            method: Set(new.method.clone()),
            target_kind: Set(new.target.kind.clone()),
            target_id: Set(new.target.id.clone()),
            target_project_id: Set(new.target.project_id.clone()),
            target_environment_id: Set(new.target.environment_id.clone()),
            target_environment_mode: Set(new.target.environment_mode.clone()),
            target_cluster_id: Set(new.target.cluster_id.clone()),
            event_time: Set(truncate_time(new.event_time)),
            origin_ip: Set(new.origin.ip_address.clone()),
            origin_user_agent: Set(new.origin.user_agent.clone()),
            status_code: Set(new.status_code.clone()),
            error_reason: Set(new.error_reason.clone()),
        }
        .insert(&self.db)
        .await
        .map_err(StoreError::db)
        .and_then(audit_event_from_model)
    }

    /// An organization's audit events, newest first (by event time, then id), filtered.
    pub async fn list_audit_events(
        &self,
        organization_id: &str,
        filter: &AuditFilter,
        page: &PageRequest<AuditCursor>,
    ) -> StoreResult<Page<AuditEvent, AuditCursor>> {
        let limit = page.limit();
        let mut query = audit_event::Entity::find()
            .filter(audit_event::Column::OrganizationId.eq(organization_id))
            .filter(filter_condition(filter));
        if let Some(after) = &page.after {
            let time = truncate_time(after.event_time);
            query = query.filter(
                Condition::any()
                    .add(audit_event::Column::EventTime.lt(time))
                    .add(
                        Condition::all()
                            .add(audit_event::Column::EventTime.eq(time))
                            .add(audit_event::Column::Id.lt(after.id.as_str())),
                    ),
            );
        }
        let rows = query
            .order_by_desc(audit_event::Column::EventTime)
            .order_by_desc(audit_event::Column::Id)
            .limit(limit + 1)
            .all(&self.db)
            .await
            .map_err(StoreError::db)?;
        let events = rows
            .into_iter()
            .map(audit_event_from_model)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(into_page(events, limit, |e| AuditCursor {
            event_time: e.event_time,
            id: e.id.clone(),
        }))
    }

    /// Deletes audit events older than `before`, in every organization (retention);
    /// returns how many.
    pub async fn delete_audit_events_before(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        audit_event::Entity::delete_many()
            .filter(audit_event::Column::EventTime.lt(truncate_time(before)))
            .exec(&self.db)
            .await
            .map(|r| r.rows_affected)
            .map_err(StoreError::db)
    }
}
