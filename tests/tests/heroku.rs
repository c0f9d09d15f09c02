//! The Heroku Platform API client against the bed's fake Heroku API.

use std::collections::BTreeMap;

use ferry_heroku::{FormationUpdate, HerokuClient, HerokuError};
use ferry_tests::{heroku, heroku_app};

const DB_URL: &str = "postgres://u:p@heroku-db.example:5432/d1";

fn client() -> HerokuClient {
    let (base, token) = heroku();
    HerokuClient::new(&base, token).expect("client")
}

#[tokio::test]
async fn audit_reads_app_formation_addons_domains_and_vars() {
    let app = heroku_app(
        DB_URL,
        serde_json::json!({"SECRET_KEY_BASE": "s3cr3t", "RAILS_ENV": "production"}),
    )
    .await;
    let h = client();
    let info = h.app(&app).await.expect("app");
    assert_eq!(
        (info.name.as_str(), info.maintenance),
        (app.as_str(), false)
    );
    let formation = h.formation(&app).await.expect("formation");
    // Heroku lists by id (ranges), not in any order of meaning.
    let mut types: Vec<(&str, u32)> = formation
        .iter()
        .map(|f| (f.process_type.as_str(), f.quantity))
        .collect();
    types.sort_unstable();
    assert_eq!(types, vec![("web", 2), ("worker", 1)]);
    let addons = h.addons(&app).await.expect("addons");
    assert_eq!(addons.len(), 1);
    assert_eq!(addons[0].addon_service.name, "heroku-postgresql");
    assert_eq!(addons[0].config_vars, vec!["DATABASE_URL".to_string()]);
    let vars = h.config_vars(&app).await.expect("vars");
    assert_eq!(vars.get("DATABASE_URL").map(String::as_str), Some(DB_URL));
    assert_eq!(
        vars.get("RAILS_ENV").map(String::as_str),
        Some("production")
    );
    let domains = h.domains(&app).await.expect("domains");
    assert!(domains.iter().any(|d| {
        d.kind == "custom"
            && d.cname
                .as_deref()
                .is_some_and(|c| c.ends_with(".herokudns.com"))
    }));
}

/// Scales the app's `worker` process type to zero; the formation after.
async fn workers_to_zero(h: &HerokuClient, app: &str) -> Vec<ferry_heroku::Formation> {
    h.scale(
        app,
        &[FormationUpdate {
            process_type: "worker".into(),
            quantity: 0,
            size: None,
        }],
    )
    .await
    .expect("scale")
}

#[tokio::test]
async fn maintenance_and_scale_change_the_app() {
    let app = heroku_app(DB_URL, serde_json::json!({})).await;
    let h = client();
    assert!(h.set_maintenance(&app, true).await.expect("on").maintenance);
    assert!(h.app(&app).await.expect("app").maintenance);
    let after = workers_to_zero(&h, &app).await;
    assert_eq!(
        after
            .iter()
            .find(|f| f.process_type == "worker")
            .map(|f| f.quantity),
        Some(0)
    );
    let err = h
        .scale(
            &app,
            &[FormationUpdate {
                process_type: "clock".into(),
                quantity: 1,
                size: None,
            }],
        )
        .await
        .expect_err("no such type");
    assert!(matches!(err, HerokuError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn database_url_cannot_be_overwritten_while_an_attachment_owns_it() {
    let app = heroku_app(DB_URL, serde_json::json!({"PLAIN": "1"})).await;
    let h = client();
    let mut change = BTreeMap::new();
    change.insert(
        "DATABASE_URL".to_string(),
        Some("postgres://rds.example/app".to_string()),
    );
    let err = h
        .update_config_vars(&app, &change)
        .await
        .expect_err("attachment owns it");
    assert!(err.is_attachment_var(), "{err:?}");
    assert_eq!(err.step_error_name(), "Ferry.Failed.HerokuRefused");
    assert_eq!(
        h.config_vars(&app).await.expect("vars")["DATABASE_URL"],
        DB_URL
    );

    // The last attachment of an add-on cannot be removed...
    let attachments = h.attachments(&app).await.expect("attachments");
    let database = attachments
        .iter()
        .find(|a| a.name == "DATABASE")
        .expect("DATABASE");
    let err = h.detach(&database.id).await.expect_err("last attachment");
    assert!(
        err.to_string().contains("Cannot destroy last attachment"),
        "{err}"
    );

    // ...so attach it under a second name first, then detach DATABASE, then set the var.
    let legacy = h
        .attach(&app, &database.addon.name, "HEROKU_POSTGRESQL_LEGACY")
        .await
        .expect("attach");
    assert_eq!(legacy.name, "HEROKU_POSTGRESQL_LEGACY");
    h.detach(&database.id).await.expect("detach DATABASE");
    let vars = h
        .update_config_vars(&app, &change)
        .await
        .expect("now a plain var");
    assert_eq!(vars["DATABASE_URL"], "postgres://rds.example/app");
    assert_eq!(
        vars["HEROKU_POSTGRESQL_LEGACY_URL"], DB_URL,
        "old database still reachable"
    );

    // Deleting a plain var works; PLAIN goes away.
    let mut delete = BTreeMap::new();
    delete.insert("PLAIN".to_string(), None);
    let vars = h.update_config_vars(&app, &delete).await.expect("delete");
    assert!(!vars.contains_key("PLAIN"));
}

#[tokio::test]
async fn bad_token_and_unknown_app_are_named_errors() {
    let (base, _) = heroku();
    let bad = HerokuClient::new(&base, "wrong-token").expect("client");
    let err = bad.app("anything").await.expect_err("unauthorized");
    assert!(
        matches!(err, HerokuError::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
    assert!(
        !err.to_string().contains("wrong-token"),
        "token leaked: {err}"
    );
    let err = client().app("no-such-app-here").await.expect_err("missing");
    assert_eq!(err.step_error_name(), "Ferry.Blocked.HerokuNotFound");
}

/// Heroku answers a list with at most 200 items and `206 Partial Content` plus `Next-Range`
/// when there are more: every list the client reads comes back whole.
#[tokio::test]
async fn lists_longer_than_a_page_are_read_whole() {
    let (base, _) = heroku();
    let name = ferry_tests::unique("pg-");
    let domains: Vec<String> = (0..450)
        .map(|i| format!("d{i}.{name}.example.com"))
        .collect();
    let formation: Vec<serde_json::Value> = (0..230)
        .map(|i| serde_json::json!({"type": format!("job{i:03}"), "quantity": 1}))
        .collect();
    let addons: Vec<serde_json::Value> = (0..210)
        .map(|i| {
            serde_json::json!({"service": "papertrail", "plan": "papertrail:choklad",
                               "as": format!("LOG{i}")})
        })
        .collect();
    let resp = reqwest::Client::new()
        .post(format!("{base}/__bed/apps"))
        .json(&serde_json::json!({
            "name": name, "database_url": DB_URL, "domains": domains,
            "formation": formation, "addons": addons,
        }))
        .send()
        .await
        .expect("reach the fake Heroku API");
    assert_eq!(resp.status().as_u16(), 201);
    let h = client();
    // 450 custom domains + the herokuapp.com one.
    assert_eq!(h.domains(&name).await.expect("domains").len(), 451);
    assert_eq!(h.formation(&name).await.expect("formation").len(), 230);
    // 210 add-ons + the database.
    assert_eq!(h.addons(&name).await.expect("addons").len(), 211);
    assert_eq!(h.attachments(&name).await.expect("attachments").len(), 211);
    let mut seen = std::collections::BTreeSet::new();
    for d in h.domains(&name).await.expect("domains") {
        assert!(seen.insert(d.hostname.clone()), "{} twice", d.hostname);
    }
}

/// After a scale-down the cutover waits for the scaled-down dynos to exit before Redis's
/// final marker: Heroku lists a dyno until its process exits (the fake, once the rehearsal
/// runs the app's processes, until it reports they exited), and a dyno that never exits
/// fails the wait, named.
#[tokio::test]
async fn the_cutover_waits_for_scaled_down_dynos_to_exit() {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering::SeqCst},
    };
    let app = heroku_app(DB_URL, serde_json::json!({})).await;
    let (base, _) = heroku();
    let http = reqwest::Client::new();
    let bed = |what: &str| {
        http.post(format!("{base}/__bed/apps/{app}/{what}"))
            .json(&serde_json::json!({}))
            .send()
    };
    bed("processes")
        .await
        .expect("processes")
        .error_for_status()
        .expect("ok");
    let h = client();
    workers_to_zero(&h, &app).await;
    let listed = h.dynos(&app).await.expect("dynos");
    assert!(
        listed
            .iter()
            .any(|d| d.name == "worker.1" && d.process_type == "worker" && d.may_run()),
        "a stopping dyno is still listed: {listed:?}"
    );
    let mut spec = ferry_tests::spec(&ferry_tests::unique("m-"), &app);
    spec.cutover.scale_down = vec!["worker".into()];
    spec.cutover.drain_timeout_seconds = 1;
    let err = ferry_steps::cutover::dynos_exited(&h, &spec)
        .await
        .expect_err("the dyno never exits");
    assert!(err.to_string().contains("worker.1"), "{err}");

    spec.cutover.drain_timeout_seconds = 60;
    let exited = Arc::new(AtomicBool::new(false));
    let reporter = {
        let exited = exited.clone();
        let request = bed("exited");
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            exited.store(true, SeqCst);
            request
                .await
                .expect("exited")
                .error_for_status()
                .expect("ok");
        }
    };
    let (waited, ()) = tokio::join!(ferry_steps::cutover::dynos_exited(&h, &spec), reporter);
    waited.expect("the dyno exited");
    assert!(exited.load(SeqCst), "the wait ended before the dyno exited");
    assert!(
        h.dynos(&app)
            .await
            .expect("dynos")
            .iter()
            .all(|d| d.process_type != "worker")
    );
}
