//! [`MemoryStore`]: the migration store and the endpoint store in a mutex, with the same
//! conditions as the DynamoDB adapter (`ferry_aws::DynamoStore`); `contract` checks both.

use std::{
    collections::BTreeMap,
    sync::{Mutex, MutexGuard},
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::{
    endpoint::{EndpointDesired, EndpointStore, EndpointTask, UNTOLD_GAP},
    state::{
        AppLock, Appended, ApprovalRequest, ApprovalStatus, AuditEvent, CommandRecord, Gate,
        MigrationRecord, Phase, WorkerCommand, WorkerProgress,
    },
    store::{MigrationStore, StoreError, StoreResult},
};

#[derive(Debug, Default)]
struct Tables {
    locks: BTreeMap<String, AppLock>,
    migrations: BTreeMap<String, MigrationRecord>,
    audit: BTreeMap<String, BTreeMap<String, AuditEvent>>,
    progress: BTreeMap<String, WorkerProgress>,
    commands: BTreeMap<String, CommandRecord>,
    approvals: BTreeMap<(String, &'static str), ApprovalRequest>,
    facts: BTreeMap<(String, String), serde_json::Value>,
    desired: BTreeMap<String, EndpointDesired>,
    tasks: BTreeMap<String, BTreeMap<String, EndpointTask>>,
}

/// Migration state and endpoint state held in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    tables: Mutex<Tables>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update_versioned(
        &self,
        migration_id: &str,
        expected_version: u64,
        now: DateTime<Utc>,
        change: impl FnOnce(&mut MigrationRecord),
        is_replay: impl Fn(&MigrationRecord) -> bool,
    ) -> StoreResult<MigrationRecord> {
        let mut t = self.lock();
        let rec = t
            .migrations
            .get_mut(migration_id)
            .ok_or_else(|| not_found(migration_id))?;
        if rec.version != expected_version {
            return if rec.version == expected_version + 1 && is_replay(rec) {
                Ok(rec.clone())
            } else {
                Err(StoreError::VersionConflict {
                    migration_id: migration_id.to_string(),
                    expected: expected_version,
                    found: rec.version,
                })
            };
        }
        change(rec);
        rec.version = expected_version + 1;
        rec.updated_at = now;
        Ok(rec.clone())
    }
}

fn not_found(migration_id: &str) -> StoreError {
    StoreError::NotFound {
        migration_id: migration_id.to_string(),
    }
}

fn lock_held(lock: &AppLock) -> StoreError {
    StoreError::LockHeld {
        app: lock.app.clone(),
        holder: lock.migration_id.clone(),
        since: lock.acquired_at,
    }
}

#[async_trait]
impl MigrationStore for MemoryStore {
    async fn acquire_app_lock(
        &self,
        app: &str,
        migration_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<AppLock> {
        let mut t = self.lock();
        match t.locks.get(app) {
            Some(l) if l.migration_id == migration_id => Ok(l.clone()),
            Some(l) => Err(lock_held(l)),
            None => {
                let lock = AppLock {
                    app: app.to_string(),
                    migration_id: migration_id.to_string(),
                    acquired_at: now,
                };
                t.locks.insert(app.to_string(), lock.clone());
                Ok(lock)
            }
        }
    }

    async fn release_app_lock(&self, app: &str, migration_id: &str) -> StoreResult<()> {
        let mut t = self.lock();
        match t.locks.get(app) {
            Some(l) if l.migration_id != migration_id => Err(lock_held(l)),
            _ => {
                t.locks.remove(app);
                Ok(())
            }
        }
    }

    async fn app_lock(&self, app: &str) -> StoreResult<Option<AppLock>> {
        Ok(self.lock().locks.get(app).cloned())
    }

    async fn create_migration(&self, record: &MigrationRecord) -> StoreResult<MigrationRecord> {
        let mut t = self.lock();
        match t.migrations.get(&record.migration_id) {
            Some(existing) if existing.spec == record.spec => Ok(existing.clone()),
            Some(_) => Err(StoreError::MigrationExists {
                migration_id: record.migration_id.clone(),
            }),
            None => {
                t.migrations
                    .insert(record.migration_id.clone(), record.clone());
                Ok(record.clone())
            }
        }
    }

    async fn migration(&self, migration_id: &str) -> StoreResult<MigrationRecord> {
        self.lock()
            .migrations
            .get(migration_id)
            .cloned()
            .ok_or_else(|| not_found(migration_id))
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
            now,
            |r| r.phase = to,
            |r| r.phase == to,
        )
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
            now,
            |r| r.execution_arn = Some(execution_arn.to_string()),
            |r| r.execution_arn.as_deref() == Some(execution_arn),
        )
    }

    async fn append_audit(&self, migration_id: &str, event: &AuditEvent) -> StoreResult<Appended> {
        let mut t = self.lock();
        let log = t.audit.entry(migration_id.to_string()).or_default();
        if log.contains_key(&event.key) {
            return Ok(Appended::AlreadyRecorded);
        }
        log.insert(event.key.clone(), event.clone());
        Ok(Appended::New)
    }

    async fn audit_log(&self, migration_id: &str) -> StoreResult<Vec<AuditEvent>> {
        let mut events: Vec<AuditEvent> = self
            .lock()
            .audit
            .get(migration_id)
            .map(|log| log.values().cloned().collect())
            .unwrap_or_default();
        events.sort_by(|a, b| (a.at, &a.key).cmp(&(b.at, &b.key)));
        Ok(events)
    }

    async fn put_progress(&self, progress: &WorkerProgress) -> StoreResult<()> {
        let mut t = self.lock();
        if let Some(stored) = t.progress.get(&progress.migration_id) {
            let newer = stored.epoch < progress.epoch
                || (stored.epoch == progress.epoch && stored.seq < progress.seq);
            if !newer {
                return Err(StoreError::WorkerSuperseded {
                    migration_id: progress.migration_id.clone(),
                    worker_id: progress.worker_id.clone(),
                    newer_epoch: stored.epoch,
                });
            }
        }
        t.progress
            .insert(progress.migration_id.clone(), progress.clone());
        Ok(())
    }

    async fn progress(&self, migration_id: &str) -> StoreResult<Option<WorkerProgress>> {
        Ok(self.lock().progress.get(migration_id).cloned())
    }

    async fn send_command(
        &self,
        migration_id: &str,
        command: WorkerCommand,
        issued_by: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<CommandRecord> {
        let mut t = self.lock();
        let seq = t.commands.get(migration_id).map_or(0, |c| c.seq) + 1;
        let record = CommandRecord {
            migration_id: migration_id.to_string(),
            seq,
            command,
            issued_at: now,
            issued_by: issued_by.to_string(),
        };
        t.commands.insert(migration_id.to_string(), record.clone());
        Ok(record)
    }

    async fn command(&self, migration_id: &str) -> StoreResult<Option<CommandRecord>> {
        Ok(self.lock().commands.get(migration_id).cloned())
    }

    async fn put_approval(&self, request: &ApprovalRequest) -> StoreResult<()> {
        let mut t = self.lock();
        let key = (request.migration_id.clone(), request.gate.as_str());
        if let Some(stored) = t.approvals.get(&key)
            && stored.status != ApprovalStatus::Pending
        {
            return Err(StoreError::ApprovalNotPending {
                migration_id: request.migration_id.clone(),
                gate: request.gate,
                status: stored.status.as_str().to_string(),
            });
        }
        // As stored: pending, undecided, whatever the request said.
        let pending = ApprovalRequest {
            status: ApprovalStatus::Pending,
            decided_by: None,
            decided_at: None,
            ..request.clone()
        };
        t.approvals.insert(key, pending);
        Ok(())
    }

    async fn approval(
        &self,
        migration_id: &str,
        gate: Gate,
    ) -> StoreResult<Option<ApprovalRequest>> {
        Ok(self
            .lock()
            .approvals
            .get(&(migration_id.to_string(), gate.as_str()))
            .cloned())
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
        let mut t = self.lock();
        let Some(a) = t
            .approvals
            .get_mut(&(migration_id.to_string(), gate.as_str()))
        else {
            return Err(not_pending("missing"));
        };
        if a.status != ApprovalStatus::Pending {
            return Err(not_pending(a.status.as_str()));
        }
        if &*a.task_token != task_token {
            return Err(not_pending("pending with another token"));
        }
        a.status = decision;
        a.decided_by = Some(decided_by.to_string());
        a.decided_at = Some(now);
        Ok(a.clone())
    }

    async fn fact(&self, migration_id: &str, name: &str) -> StoreResult<Option<serde_json::Value>> {
        Ok(self
            .lock()
            .facts
            .get(&(migration_id.to_string(), name.to_string()))
            .cloned())
    }

    async fn swap_fact(
        &self,
        migration_id: &str,
        name: &str,
        expected: Option<&serde_json::Value>,
        value: &serde_json::Value,
    ) -> StoreResult<bool> {
        let mut t = self.lock();
        let key = (migration_id.to_string(), name.to_string());
        if t.facts.get(&key) != expected {
            return Ok(false);
        }
        t.facts.insert(key, value.clone());
        Ok(true)
    }
}

#[async_trait]
impl EndpointStore for MemoryStore {
    async fn set_endpoint_desired(&self, want: EndpointDesired) -> StoreResult<EndpointDesired> {
        let mut t = self.lock();
        let prev = t.desired.get(&want.app).map_or(0, |d| d.seq);
        let record = EndpointDesired {
            seq: prev + UNTOLD_GAP,
            ..want
        };
        t.desired.insert(record.app.clone(), record.clone());
        Ok(record)
    }

    async fn put_endpoint_desired_after(
        &self,
        after: u64,
        want: EndpointDesired,
    ) -> StoreResult<Option<EndpointDesired>> {
        let mut t = self.lock();
        // As DynamoDB's `attribute_not_exists(pk) OR seq = :prev`: a first state is written
        // whatever number its caller names.
        if t.desired.get(&want.app).is_some_and(|d| d.seq != after) {
            return Ok(None);
        }
        let record = EndpointDesired {
            seq: after + 1,
            ..want
        };
        t.desired.insert(record.app.clone(), record.clone());
        Ok(Some(record))
    }

    async fn endpoint_desired(&self, app: &str) -> StoreResult<Option<EndpointDesired>> {
        Ok(self.lock().desired.get(app).cloned())
    }

    async fn put_endpoint_task(&self, task: &EndpointTask) -> StoreResult<()> {
        self.lock()
            .tasks
            .entry(task.app.clone())
            .or_default()
            .insert(task.task_id.clone(), task.clone());
        Ok(())
    }

    async fn endpoint_tasks(&self, app: &str) -> StoreResult<Vec<EndpointTask>> {
        Ok(self
            .lock()
            .tasks
            .get(app)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn remove_endpoint_task(&self, app: &str, task_id: &str) -> StoreResult<()> {
        if let Some(m) = self.lock().tasks.get_mut(app) {
            m.remove(task_id);
        }
        Ok(())
    }
}
