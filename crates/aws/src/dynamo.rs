//! [`MigrationStore`] on one DynamoDB table (single-table design, see ARCHITECTURE.md).
//!
//! | item            | pk            | sk              |
//! |-----------------|---------------|-----------------|
//! | migration       | `MIG#<id>`    | `META`          |
//! | audit event     | `MIG#<id>`    | `AUDIT#<key>`   |
//! | worker progress | `MIG#<id>`    | `PROGRESS`      |
//! | approval        | `MIG#<id>`    | `APPROVAL#<gate>` |
//! | app lock        | `APP#<app>`   | `LOCK`          |
//! | endpoint desired state | `APP#<app>` | `ENDPOINT`    |
//! | endpoint task report | `APP#<app>` | `ENDPOINT#TASK#<task>` |
//!
//! Every write that changes state carries a condition; a failed condition is read back to tell
//! a harmless retry (already applied) from a real conflict.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::{
    Client,
    error::{ProvideErrorMetadata, SdkError},
    types::{
        AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
        ScalarAttributeType,
    },
};
use chrono::{DateTime, Utc};
use ferry_core::{
    endpoint::{EndpointDesired, EndpointStore, EndpointTask},
    state::{
        AppLock, Appended, ApprovalRequest, ApprovalStatus, AuditEvent, CommandRecord, Gate,
        MigrationRecord, Outcome, Phase, WorkerCommand, WorkerProgress,
    },
    store::{MigrationStore, StoreError, StoreResult},
};

type Item = HashMap<String, AttributeValue>;

/// The DynamoDB migration store.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    /// A store on `table`, which must exist (see [`create_table`]).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Every migration in the table, newest first (a scan of the `META` items: for the
    /// operator's `ferry list`, not for steps).
    pub async fn migrations(&self) -> StoreResult<Vec<MigrationRecord>> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("sk = :meta")
                .expression_attribute_values(":meta", s("META"))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(classify)?;
            for item in page.items.unwrap_or_default() {
                let key = format!("{}/META", opt_s(&item, "pk").unwrap_or_default());
                out.push(record(&item, &key)?);
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        out.sort_by_key(|r| std::cmp::Reverse(r.created_at));
        Ok(out)
    }

    async fn get(&self, pk: &str, sk: &str) -> StoreResult<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        Ok(out.item)
    }

    async fn query_prefix(&self, pk: &str, prefix: &str) -> StoreResult<Vec<Item>> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :pre)")
                .expression_attribute_values(":pk", s(pk))
                .expression_attribute_values(":pre", s(prefix))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(classify)?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(items),
            }
        }
    }

    /// Writes `record` (numbered `prev + 1`) as the item `pk`/`sk` if the stored one still
    /// has number `prev`; `None` when another writer got that number first.
    async fn put_numbered<T: serde::Serialize + HasSeq>(
        &self,
        pk: &str,
        sk: &str,
        prev: u64,
        record: T,
    ) -> StoreResult<Option<T>> {
        let body = serde_json::to_string(&record).map_err(|e| corrupt(pk, sk, e))?;
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(pk))
            .item("sk", s(sk))
            .item("kind", s(&sk.to_ascii_lowercase()))
            .item("seq", n(record.seq()))
            .item("body", s(&body))
            .condition_expression("attribute_not_exists(pk) OR seq = :prev")
            .expression_attribute_values(":prev", n(prev))
            .send()
            .await;
        match res {
            Ok(_) => Ok(Some(record)),
            Err(e) if is_condition_failure(&e) => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    /// Changes the migration record under an optimistic version check. `apply` names the
    /// extra attributes to set; `is_replay` tells, from the stored record, whether this exact
    /// change was already applied by an earlier attempt.
    async fn update_versioned(
        &self,
        migration_id: &str,
        expected_version: u64,
        set: Vec<(&str, AttributeValue)>,
        now: DateTime<Utc>,
        is_replay: impl Fn(&MigrationRecord) -> bool,
    ) -> StoreResult<MigrationRecord> {
        let mut expr = String::from("SET #version = :next, #updated_at = :now");
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&mig_pk(migration_id)))
            .key("sk", s("META"))
            .condition_expression("attribute_exists(pk) AND #version = :expected")
            .expression_attribute_names("#version", "version")
            .expression_attribute_names("#updated_at", "updated_at")
            .expression_attribute_values(":expected", n(expected_version))
            .expression_attribute_values(":next", n(expected_version + 1))
            .expression_attribute_values(":now", s(&now.to_rfc3339()));
        for (i, (name, value)) in set.into_iter().enumerate() {
            expr.push_str(&format!(", #a{i} = :a{i}"));
            req = req
                .expression_attribute_names(format!("#a{i}"), name)
                .expression_attribute_values(format!(":a{i}"), value);
        }
        match req.update_expression(expr).send().await {
            Ok(_) => self.migration(migration_id).await,
            Err(e) if is_condition_failure(&e) => {
                let current = self.migration(migration_id).await?;
                if current.version == expected_version + 1 && is_replay(&current) {
                    Ok(current)
                } else {
                    Err(StoreError::VersionConflict {
                        migration_id: migration_id.to_string(),
                        expected: expected_version,
                        found: current.version,
                    })
                }
            }
            Err(e) => Err(classify(e)),
        }
    }
}

/// Creates the store's table (pk/sk strings, on-demand billing); an existing table is left as
/// it is. Used by the local test bed and rehearsal; production tables come from the SAM template.
pub async fn create_table(client: &Client, table: &str) -> StoreResult<()> {
    let res = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr_def("pk")?)
        .attribute_definitions(attr_def("sk")?)
        .key_schema(key_elem("pk", KeyType::Hash)?)
        .key_schema(key_elem("sk", KeyType::Range)?)
        .send()
        .await;
    match res {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("ResourceInUseException") => Ok(()),
        Err(e) => Err(classify(e)),
    }
}

fn attr_def(name: &str) -> StoreResult<AttributeDefinition> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(|e| StoreError::Unavailable(Box::new(e)))
}

fn key_elem(name: &str, kind: KeyType) -> StoreResult<KeySchemaElement> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .map_err(|e| StoreError::Unavailable(Box::new(e)))
}

#[async_trait]
impl MigrationStore for DynamoStore {
    async fn acquire_app_lock(
        &self,
        app: &str,
        migration_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<AppLock> {
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&app_pk(app)))
            .item("sk", s("LOCK"))
            .item("kind", s("lock"))
            .item("app", s(app))
            .item("migration_id", s(migration_id))
            .item("acquired_at", s(&now.to_rfc3339()))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match res {
            Ok(_) => Ok(AppLock {
                app: app.to_string(),
                migration_id: migration_id.to_string(),
                acquired_at: now,
            }),
            Err(e) if is_condition_failure(&e) => match self.app_lock(app).await? {
                Some(lock) if lock.migration_id == migration_id => Ok(lock),
                Some(lock) => Err(StoreError::LockHeld {
                    app: app.to_string(),
                    holder: lock.migration_id,
                    since: lock.acquired_at,
                }),
                // Released between our write and our read: try once more.
                None => Box::pin(self.acquire_app_lock(app, migration_id, now)).await,
            },
            Err(e) => Err(classify(e)),
        }
    }

    async fn release_app_lock(&self, app: &str, migration_id: &str) -> StoreResult<()> {
        let res = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(&app_pk(app)))
            .key("sk", s("LOCK"))
            .condition_expression("attribute_not_exists(pk) OR migration_id = :m")
            .expression_attribute_values(":m", s(migration_id))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => match self.app_lock(app).await? {
                Some(lock) => Err(StoreError::LockHeld {
                    app: app.to_string(),
                    holder: lock.migration_id,
                    since: lock.acquired_at,
                }),
                None => Ok(()),
            },
            Err(e) => Err(classify(e)),
        }
    }

    async fn app_lock(&self, app: &str) -> StoreResult<Option<AppLock>> {
        let pk = app_pk(app);
        let Some(item) = self.get(&pk, "LOCK").await? else {
            return Ok(None);
        };
        let key = format!("{pk}/LOCK");
        Ok(Some(AppLock {
            app: get_s(&item, "app", &key)?.to_string(),
            migration_id: get_s(&item, "migration_id", &key)?.to_string(),
            acquired_at: get_time(&item, "acquired_at", &key)?,
        }))
    }

    async fn create_migration(&self, record: &MigrationRecord) -> StoreResult<MigrationRecord> {
        let spec = serde_json::to_string(&record.spec).map_err(|e| StoreError::Corrupt {
            key: mig_pk(&record.migration_id),
            reason: format!("serialize spec: {e}"),
        })?;
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&mig_pk(&record.migration_id)))
            .item("sk", s("META"))
            .item("kind", s("migration"))
            .item("migration_id", s(&record.migration_id))
            .item("app", s(&record.app))
            .item("spec", s(&spec))
            .item("phase", s(record.phase.as_str()))
            .item("version", n(record.version))
            .item("created_at", s(&record.created_at.to_rfc3339()))
            .item("updated_at", s(&record.updated_at.to_rfc3339()))
            .condition_expression("attribute_not_exists(pk)");
        if let Some(arn) = &record.execution_arn {
            req = req.item("execution_arn", s(arn));
        }
        match req.send().await {
            Ok(_) => Ok(record.clone()),
            Err(e) if is_condition_failure(&e) => {
                let existing = self.migration(&record.migration_id).await?;
                if existing.spec == record.spec {
                    Ok(existing)
                } else {
                    Err(StoreError::MigrationExists {
                        migration_id: record.migration_id.clone(),
                    })
                }
            }
            Err(e) => Err(classify(e)),
        }
    }

    async fn migration(&self, migration_id: &str) -> StoreResult<MigrationRecord> {
        let pk = mig_pk(migration_id);
        let item = self
            .get(&pk, "META")
            .await?
            .ok_or_else(|| StoreError::NotFound {
                migration_id: migration_id.to_string(),
            })?;
        record(&item, &format!("{pk}/META"))
    }

    async fn advance_phase(
        &self,
        migration_id: &str,
        expected_version: u64,
        to: Phase,
        now: DateTime<Utc>,
    ) -> StoreResult<MigrationRecord> {
        let current = self.migration(migration_id).await?;
        if current.version == expected_version && !current.phase.can_move_to(to) {
            return Err(StoreError::IllegalTransition {
                migration_id: migration_id.to_string(),
                from: current.phase,
                to,
            });
        }
        self.update_versioned(
            migration_id,
            expected_version,
            vec![("phase", s(to.as_str()))],
            now,
            |r| r.phase == to,
        )
        .await
    }

    async fn set_execution_arn(
        &self,
        migration_id: &str,
        expected_version: u64,
        execution_arn: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<MigrationRecord> {
        self.update_versioned(
            migration_id,
            expected_version,
            vec![("execution_arn", s(execution_arn))],
            now,
            |r| r.execution_arn.as_deref() == Some(execution_arn),
        )
        .await
    }

    async fn append_audit(&self, migration_id: &str, event: &AuditEvent) -> StoreResult<Appended> {
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&mig_pk(migration_id)))
            .item("sk", s(&format!("AUDIT#{}", event.key)))
            .item("kind", s("audit"))
            .item("key", s(&event.key))
            .item("at", s(&event.at.to_rfc3339()))
            .item("step", s(&event.step))
            .item("actor", s(&event.actor))
            .item("action", s(&event.action))
            .item("outcome", s(outcome_str(event.outcome)))
            .item("detail", s(&event.detail.to_string()))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match res {
            Ok(_) => Ok(Appended::New),
            Err(e) if is_condition_failure(&e) => Ok(Appended::AlreadyRecorded),
            Err(e) => Err(classify(e)),
        }
    }

    async fn audit_log(&self, migration_id: &str) -> StoreResult<Vec<AuditEvent>> {
        let pk = mig_pk(migration_id);
        let mut events = self
            .query_prefix(&pk, "AUDIT#")
            .await?
            .iter()
            .map(|item| {
                let key = format!("{pk}/{}", opt_s(item, "sk").unwrap_or_default());
                let outcome = get_s(item, "outcome", &key)?;
                let detail = get_s(item, "detail", &key)?;
                Ok(AuditEvent {
                    key: get_s(item, "key", &key)?.to_string(),
                    at: get_time(item, "at", &key)?,
                    step: get_s(item, "step", &key)?.to_string(),
                    actor: get_s(item, "actor", &key)?.to_string(),
                    action: get_s(item, "action", &key)?.to_string(),
                    outcome: parse_outcome(outcome)
                        .ok_or_else(|| corrupt(&key, "outcome", outcome))?,
                    detail: serde_json::from_str(detail).map_err(|e| corrupt(&key, "detail", e))?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        events.sort_by(|a, b| (a.at, &a.key).cmp(&(b.at, &b.key)));
        Ok(events)
    }

    async fn put_progress(&self, progress: &WorkerProgress) -> StoreResult<()> {
        let body = serde_json::to_string(progress).map_err(|e| StoreError::Corrupt {
            key: mig_pk(&progress.migration_id),
            reason: format!("serialize progress: {e}"),
        })?;
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&mig_pk(&progress.migration_id)))
            .item("sk", s("PROGRESS"))
            .item("kind", s("progress"))
            .item("epoch", n(progress.epoch))
            .item("seq", n(progress.seq))
            .item("heartbeat_at", s(&progress.heartbeat_at.to_rfc3339()))
            .item("body", s(&body))
            .condition_expression(
                "attribute_not_exists(pk) OR epoch < :e OR (epoch = :e AND seq < :s)",
            )
            .expression_attribute_values(":e", n(progress.epoch))
            .expression_attribute_values(":s", n(progress.seq))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => {
                let newer_epoch = self
                    .progress(&progress.migration_id)
                    .await?
                    .map_or(progress.epoch, |p| p.epoch);
                Err(StoreError::WorkerSuperseded {
                    migration_id: progress.migration_id.clone(),
                    worker_id: progress.worker_id.clone(),
                    newer_epoch,
                })
            }
            Err(e) => Err(classify(e)),
        }
    }

    async fn fact(&self, migration_id: &str, name: &str) -> StoreResult<Option<serde_json::Value>> {
        let pk = mig_pk(migration_id);
        let sk = format!("FACT#{name}");
        let Some(item) = self.get(&pk, &sk).await? else {
            return Ok(None);
        };
        let key = format!("{pk}/{sk}");
        let body = get_s(&item, "body", &key)?;
        serde_json::from_str(body)
            .map(Some)
            .map_err(|e| corrupt(&key, "body", e))
    }

    async fn swap_fact(
        &self,
        migration_id: &str,
        name: &str,
        expected: Option<&serde_json::Value>,
        value: &serde_json::Value,
    ) -> StoreResult<bool> {
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&mig_pk(migration_id)))
            .item("sk", s(&format!("FACT#{name}")))
            .item("kind", s("fact"))
            .item("body", s(&value.to_string()));
        req = match expected {
            None => req.condition_expression("attribute_not_exists(pk)"),
            Some(old) => req
                .condition_expression("body = :old")
                .expression_attribute_values(":old", s(&old.to_string())),
        };
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(classify(e)),
        }
    }

    async fn progress(&self, migration_id: &str) -> StoreResult<Option<WorkerProgress>> {
        let pk = mig_pk(migration_id);
        let Some(item) = self.get(&pk, "PROGRESS").await? else {
            return Ok(None);
        };
        let key = format!("{pk}/PROGRESS");
        let body = get_s(&item, "body", &key)?;
        serde_json::from_str(body)
            .map(Some)
            .map_err(|e| corrupt(&key, "body", e))
    }

    async fn send_command(
        &self,
        migration_id: &str,
        command: WorkerCommand,
        issued_by: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<CommandRecord> {
        let pk = mig_pk(migration_id);
        let make = |seq| CommandRecord {
            migration_id: migration_id.to_string(),
            seq,
            command: command.clone(),
            issued_at: now,
            issued_by: issued_by.to_string(),
        };
        for _ in 0..5 {
            let prev = self.command(migration_id).await?.map_or(0, |c| c.seq);
            if let Some(r) = self
                .put_numbered(&pk, "COMMAND", prev, make(prev + 1))
                .await?
            {
                return Ok(r);
            }
        }
        Err(StoreError::VersionConflict {
            migration_id: migration_id.to_string(),
            expected: 0,
            found: self.command(migration_id).await?.map_or(0, |c| c.seq),
        })
    }

    async fn command(&self, migration_id: &str) -> StoreResult<Option<CommandRecord>> {
        let pk = mig_pk(migration_id);
        let Some(item) = self.get(&pk, "COMMAND").await? else {
            return Ok(None);
        };
        let key = format!("{pk}/COMMAND");
        let body = get_s(&item, "body", &key)?;
        serde_json::from_str(body)
            .map(Some)
            .map_err(|e| corrupt(&key, "body", e))
    }

    async fn put_approval(&self, request: &ApprovalRequest) -> StoreResult<()> {
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&mig_pk(&request.migration_id)))
            .item("sk", s(&approval_sk(request.gate)))
            .item("kind", s("approval"))
            .item("migration_id", s(&request.migration_id))
            .item("gate", s(request.gate.as_str()))
            .item("task_token", s(&request.task_token))
            .item("requested_at", s(&request.requested_at.to_rfc3339()))
            .item("status", s(ApprovalStatus::Pending.as_str()))
            .condition_expression("attribute_not_exists(pk) OR #status = :pending")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":pending", s(ApprovalStatus::Pending.as_str()))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Err(StoreError::ApprovalNotPending {
                migration_id: request.migration_id.clone(),
                gate: request.gate,
                status: self
                    .approval(&request.migration_id, request.gate)
                    .await?
                    .map_or("missing", |a| a.status.as_str())
                    .to_string(),
            }),
            Err(e) => Err(classify(e)),
        }
    }

    async fn approval(
        &self,
        migration_id: &str,
        gate: Gate,
    ) -> StoreResult<Option<ApprovalRequest>> {
        let pk = mig_pk(migration_id);
        let sk = approval_sk(gate);
        let Some(item) = self.get(&pk, &sk).await? else {
            return Ok(None);
        };
        let key = format!("{pk}/{sk}");
        let status = get_s(&item, "status", &key)?;
        Ok(Some(ApprovalRequest {
            migration_id: migration_id.to_string(),
            gate,
            task_token: get_s(&item, "task_token", &key)?.into(),
            requested_at: get_time(&item, "requested_at", &key)?,
            status: ApprovalStatus::parse(status).ok_or_else(|| corrupt(&key, "status", status))?,
            decided_by: opt_s(&item, "decided_by"),
            decided_at: match opt_s(&item, "decided_at") {
                Some(t) => Some(parse_time(&t).ok_or_else(|| corrupt(&key, "decided_at", &t))?),
                None => None,
            },
        }))
    }

    async fn decide_approval(
        &self,
        migration_id: &str,
        gate: Gate,
        task_token: &str,
        decision: ApprovalStatus,
        decided_by: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<ApprovalRequest> {
        let not_pending = |status: &str| StoreError::ApprovalNotPending {
            migration_id: migration_id.to_string(),
            gate,
            status: status.to_string(),
        };
        if decision == ApprovalStatus::Pending {
            return Err(not_pending("pending (a decision must approve or reject)"));
        }
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&mig_pk(migration_id)))
            .key("sk", s(&approval_sk(gate)))
            .update_expression("SET #status = :d, decided_by = :by, decided_at = :at")
            .condition_expression("#status = :pending AND task_token = :token")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":d", s(decision.as_str()))
            .expression_attribute_values(":by", s(decided_by))
            .expression_attribute_values(":at", s(&now.to_rfc3339()))
            .expression_attribute_values(":pending", s(ApprovalStatus::Pending.as_str()))
            .expression_attribute_values(":token", s(task_token))
            .send()
            .await;
        match res {
            Ok(_) => self
                .approval(migration_id, gate)
                .await?
                .ok_or_else(|| not_pending("missing")),
            Err(e) if is_condition_failure(&e) => {
                let status = match self.approval(migration_id, gate).await? {
                    Some(a) if a.status == ApprovalStatus::Pending => {
                        "pending with another token".to_string()
                    }
                    Some(a) => a.status.as_str().to_string(),
                    None => "missing".to_string(),
                };
                Err(not_pending(&status))
            }
            Err(e) => Err(classify(e)),
        }
    }
}

#[async_trait]
impl EndpointStore for DynamoStore {
    async fn set_endpoint_desired(&self, want: EndpointDesired) -> StoreResult<EndpointDesired> {
        let pk = app_pk(&want.app);
        for _ in 0..5 {
            let prev = self.endpoint_desired(&want.app).await?.map_or(0, |d| d.seq);
            let record = EndpointDesired {
                seq: prev + ferry_core::endpoint::UNTOLD_GAP,
                ..want.clone()
            };
            if let Some(r) = self.put_numbered(&pk, ENDPOINT_SK, prev, record).await? {
                return Ok(r);
            }
        }
        Err(StoreError::VersionConflict {
            migration_id: want.migration_id.clone(),
            expected: 0,
            found: self.endpoint_desired(&want.app).await?.map_or(0, |d| d.seq),
        })
    }

    async fn put_endpoint_desired_after(
        &self,
        after: u64,
        want: EndpointDesired,
    ) -> StoreResult<Option<EndpointDesired>> {
        let record = EndpointDesired {
            seq: after + 1,
            ..want
        };
        self.put_numbered(&app_pk(&record.app), ENDPOINT_SK, after, record)
            .await
    }

    async fn endpoint_desired(&self, app: &str) -> StoreResult<Option<EndpointDesired>> {
        let pk = app_pk(app);
        let Some(item) = self.get(&pk, ENDPOINT_SK).await? else {
            return Ok(None);
        };
        let key = format!("{pk}/{ENDPOINT_SK}");
        serde_json::from_str(get_s(&item, "body", &key)?)
            .map(Some)
            .map_err(|e| corrupt(&key, "body", e))
    }

    async fn put_endpoint_task(&self, task: &EndpointTask) -> StoreResult<()> {
        let pk = app_pk(&task.app);
        let body = serde_json::to_string(task).map_err(|e| corrupt(&pk, "endpoint task", e))?;
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&pk))
            .item("sk", s(&endpoint_task_sk(&task.task_id)))
            .item("kind", s("endpoint_task"))
            .item("body", s(&body))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn endpoint_tasks(&self, app: &str) -> StoreResult<Vec<EndpointTask>> {
        let pk = app_pk(app);
        self.query_prefix(&pk, &endpoint_task_sk(""))
            .await?
            .iter()
            .map(|item| {
                let key = format!("{pk}/{}", opt_s(item, "sk").unwrap_or_default());
                serde_json::from_str(get_s(item, "body", &key)?)
                    .map_err(|e| corrupt(&key, "body", e))
            })
            .collect()
    }

    async fn remove_endpoint_task(&self, app: &str, task_id: &str) -> StoreResult<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(&app_pk(app)))
            .key("sk", s(&endpoint_task_sk(task_id)))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }
}

const ENDPOINT_SK: &str = "ENDPOINT";

/// A record numbered 1, 2, 3… in its item's `seq` attribute.
trait HasSeq {
    fn seq(&self) -> u64;
}

impl HasSeq for CommandRecord {
    fn seq(&self) -> u64 {
        self.seq
    }
}

impl HasSeq for EndpointDesired {
    fn seq(&self) -> u64 {
        self.seq
    }
}

fn endpoint_task_sk(task_id: &str) -> String {
    format!("ENDPOINT#TASK#{task_id}")
}

fn mig_pk(migration_id: &str) -> String {
    format!("MIG#{migration_id}")
}

fn app_pk(app: &str) -> String {
    format!("APP#{app}")
}

fn approval_sk(gate: Gate) -> String {
    format!("APPROVAL#{}", gate.as_str())
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn opt_s(item: &Item, name: &str) -> Option<String> {
    item.get(name)?.as_s().ok().cloned()
}

fn get_s<'a>(item: &'a Item, name: &str, key: &str) -> StoreResult<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
        .ok_or_else(|| corrupt(key, name, "missing or not a string"))
}

fn get_n(item: &Item, name: &str, key: &str) -> StoreResult<u64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| corrupt(key, name, "missing or not a whole number"))
}

fn get_time(item: &Item, name: &str, key: &str) -> StoreResult<DateTime<Utc>> {
    let text = get_s(item, name, key)?;
    parse_time(text).ok_or_else(|| corrupt(key, name, text))
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn corrupt(key: &str, field: &str, why: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: key.to_string(),
        reason: format!("{field}: {why}"),
    }
}

fn outcome_str(o: Outcome) -> &'static str {
    match o {
        Outcome::Started => "started",
        Outcome::Succeeded => "succeeded",
        Outcome::Failed => "failed",
        Outcome::Info => "info",
    }
}

fn parse_outcome(s: &str) -> Option<Outcome> {
    [
        Outcome::Started,
        Outcome::Succeeded,
        Outcome::Failed,
        Outcome::Info,
    ]
    .into_iter()
    .find(|o| outcome_str(*o) == s)
}

fn is_condition_failure<E: ProvideErrorMetadata>(e: &SdkError<E>) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}

/// Maps an SDK error to a retryable store error (throttling vs. anything else).
fn classify<E>(e: SdkError<E>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    const THROTTLES: &[&str] = &[
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "ThrottlingException",
        "TransactionConflictException",
    ];
    // The SDK's own Display says only "service error": keep the whole chain.
    let detail = aws_smithy_types::error::display::DisplayErrorContext(&e).to_string();
    if e.code().is_some_and(|c| THROTTLES.contains(&c)) {
        StoreError::Throttled(detail.into())
    } else {
        StoreError::Unavailable(detail.into())
    }
}

/// A migration record from its `META` item.
fn record(item: &Item, key: &str) -> StoreResult<MigrationRecord> {
    let spec_text = get_s(item, "spec", key)?;
    let phase_text = get_s(item, "phase", key)?;
    Ok(MigrationRecord {
        migration_id: get_s(item, "migration_id", key)?.to_string(),
        app: get_s(item, "app", key)?.to_string(),
        spec: serde_json::from_str(spec_text).map_err(|e| corrupt(key, "spec", e))?,
        phase: Phase::parse(phase_text).ok_or_else(|| corrupt(key, "phase", phase_text))?,
        version: get_n(item, "version", key)?,
        created_at: get_time(item, "created_at", key)?,
        updated_at: get_time(item, "updated_at", key)?,
        execution_arn: opt_s(item, "execution_arn"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_names_round_trip() {
        for o in [
            Outcome::Started,
            Outcome::Succeeded,
            Outcome::Failed,
            Outcome::Info,
        ] {
            assert_eq!(parse_outcome(outcome_str(o)), Some(o));
            assert_eq!(
                serde_json::to_value(o).ok(),
                Some(serde_json::Value::from(outcome_str(o)))
            );
        }
    }
}
