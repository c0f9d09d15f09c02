//! A [`Deps`] over the in-memory services (`ferry_core::memory`) and a clock the test drives,
//! for fast unit tests of the steps' decisions: no PostgreSQL, no emulator, no sleeping.
//! The end-to-end tests in `tests/` keep checking the wiring against real services.

use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use ferry_core::{
    MigrationSpec, MigrationStore,
    clock::ManualClock,
    memory::{
        MemoryAlarms, MemoryCallbacks, MemoryCompute, MemoryDatabases, MemoryNotifier,
        MemoryParams, MemoryRouter, MemorySchedule, MemorySecrets, MemoryStore,
    },
    metrics::Recorder,
    state::{MigrationRecord, Phase},
    traffic::OtherRecord,
};

use crate::{Deps, Settings};

/// The in-memory services behind a [`Deps`], kept to set up and inspect.
pub(crate) struct World {
    pub deps: Deps,
    pub store: Arc<MemoryStore>,
    pub router: MemoryRouter,
    pub schedule: MemorySchedule,
    pub alarms: MemoryAlarms,
    pub callbacks: MemoryCallbacks,
    pub notifier: MemoryNotifier,
    pub params: MemoryParams,
    pub clock: ManualClock,
    pub spec: MigrationSpec,
}

/// 2026-12-01T10:00:00Z: where every world's clock starts.
pub(crate) fn start_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
        .expect("time")
        .with_timezone(&Utc)
}

/// The example spec with `edit` applied to its JSON (validated as users' specs are).
pub(crate) fn spec_with(edit: impl FnOnce(&mut serde_json::Value)) -> MigrationSpec {
    let mut v: serde_json::Value =
        serde_json::from_str(include_str!("../../../examples/minimal.json")).expect("example");
    edit(&mut v);
    ferry_core::spec::from_value(&v).expect("the edited example is a valid spec")
}

impl World {
    /// A migration of `spec` recorded in phase `phase` (moved there step by step, as the
    /// state machine would), its app locked, and its record name a simple CNAME to Heroku.
    pub async fn at(spec: MigrationSpec, phase: Phase) -> Self {
        let store = Arc::new(MemoryStore::new());
        let router = MemoryRouter::with(
            "acme.example.",
            vec![OtherRecord {
                rtype: "CNAME".into(),
                set_identifier: None,
                ttl: Some(300),
                values: vec![spec.traffic.heroku_target.clone()],
            }],
        );
        let clock = ManualClock::at(start_time());
        let (schedule, alarms, callbacks, notifier, params) = Default::default();
        let services = Services {
            router: &router,
            schedule: &schedule,
            alarms: &alarms,
            callbacks: &callbacks,
            notifier: &notifier,
            params: &params,
        };
        let w = Self {
            deps: deps(&store, services, &clock),
            store,
            router,
            schedule,
            alarms,
            callbacks,
            notifier,
            params,
            clock,
            spec,
        };
        w.record_at(phase).await;
        w
    }

    async fn record_at(&self, phase: Phase) {
        let id = &self.spec.migration_id;
        let now = start_time();
        let mut rec = self
            .store
            .create_migration(&MigrationRecord::new(self.spec.clone(), now))
            .await
            .expect("create");
        rec = self
            .store
            .set_execution_arn(id, rec.version, EXECUTION, now)
            .await
            .expect("arn");
        self.store
            .acquire_app_lock(&self.spec.heroku.app, id, now)
            .await
            .expect("lock");
        if phase == Phase::Created {
            return;
        }
        // Phase::ALL lists the forward path first, in order.
        for p in Phase::ALL.into_iter().skip(1) {
            rec = self
                .store
                .advance_phase(id, rec.version, p, now)
                .await
                .expect("advance");
            if p == phase {
                return;
            }
        }
        panic!("{phase} is not on the forward path");
    }

    /// The migration's phase now.
    pub async fn phase(&self) -> Phase {
        self.store
            .migration(&self.spec.migration_id)
            .await
            .expect("record")
            .phase
    }

    /// The actions of the audit log, in order.
    pub async fn audited(&self) -> Vec<String> {
        self.store
            .audit_log(&self.spec.migration_id)
            .await
            .expect("audit")
            .into_iter()
            .map(|e| format!("{}/{}", e.step, e.action))
            .collect()
    }
}

/// The execution the world's migration records as its own.
pub(crate) const EXECUTION: &str = "arn:aws:states:us-east-1:000000000000:execution:ferry:run-1";

struct Services<'a> {
    router: &'a MemoryRouter,
    schedule: &'a MemorySchedule,
    alarms: &'a MemoryAlarms,
    callbacks: &'a MemoryCallbacks,
    notifier: &'a MemoryNotifier,
    params: &'a MemoryParams,
}

fn deps(store: &Arc<MemoryStore>, s: Services<'_>, clock: &ManualClock) -> Deps {
    Deps {
        store: store.clone(),
        endpoints: store.clone(),
        params: Arc::new(s.params.clone()),
        secrets: Arc::new(MemorySecrets::default()),
        router: Arc::new(s.router.clone()),
        callbacks: Arc::new(s.callbacks.clone()),
        schedule: Arc::new(s.schedule.clone()),
        alarms: Arc::new(s.alarms.clone()),
        notifier: Arc::new(s.notifier.clone()),
        compute: Arc::new(MemoryCompute::default()),
        databases: Arc::new(MemoryDatabases::default()),
        http: reqwest::Client::new(),
        metrics: Arc::new(Recorder::default()),
        clock: Arc::new(clock.clone()),
        settings: Settings {
            heroku_api_url: "http://127.0.0.1:9".into(),
            approval_url: None,
            link_secret_param: "/ferry/test/link-secret".into(),
            slack_signing_secret_param: None,
            canary_function_arn: "arn:aws:lambda:us-east-1:000000000000:function:ferry-canary"
                .into(),
            rule_prefix: "ferry-canary-".into(),
            pg_bin: "/usr/lib/postgresql/17/bin".into(),
            fault: None,
            fault_prefix: None,
            endpoint_control_key_param: None,
            drain_poll: std::time::Duration::from_millis(10),
        },
        control_key: Arc::new(OnceLock::new()),
    }
}
