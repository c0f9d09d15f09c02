//! The Route 53 weighted pair against the AWS emulator.

use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, HostedZoneConfig, ResourceRecord, ResourceRecordSet, RrType,
};
use ferry_core::{
    StepErrorName,
    traffic::{TrafficRouter, Weights},
};
use ferry_tests::{bed_var, spec, unique};

#[tokio::test]
async fn weights_are_written_as_a_pair_and_read_back() {
    bed_var("AWS_ENDPOINT_URL");
    let config = ferry_aws::sdk_config().await;
    let client = aws_sdk_route53::Client::new(&config);
    let domain = format!("{}.example.com", unique("z"));
    let zone = client
        .create_hosted_zone()
        .name(&domain)
        .caller_reference(unique("ref-"))
        .hosted_zone_config(HostedZoneConfig::builder().comment("ferry test").build())
        .send()
        .await
        .expect("create zone");
    let zone_id = zone
        .hosted_zone()
        .map(|z| z.id().to_string())
        .expect("zone id");
    let mut traffic = spec("m", "acme-prod").traffic;
    traffic.hosted_zone_id = zone_id;
    traffic.record_name = format!("app.{domain}");
    let router = ferry_aws::Route53Router::new(client.clone());

    assert_eq!(
        router.weights(&traffic).await.expect("read"),
        None,
        "no pair yet"
    );
    router
        .set_weights(&traffic, Weights::for_aws_percent(25))
        .await
        .expect("25%");
    let w = router.weights(&traffic).await.expect("read").expect("pair");
    assert_eq!(
        w,
        Weights {
            heroku: 75,
            aws: 25
        }
    );
    assert_eq!(w.aws_share_percent(), 25.0);
    router
        .set_weights(&traffic, Weights::for_aws_percent(100))
        .await
        .expect("100%");
    assert_eq!(
        router.weights(&traffic).await.expect("read"),
        Some(Weights {
            heroku: 0,
            aws: 100
        })
    );

    // Both records exist with their targets and the spec's TTL.
    assert_eq!(
        ferry_tests::aws::records_at(&config, &traffic.hosted_zone_id, &traffic.record_name).await,
        vec![
            (Some("ferry-aws".into()), traffic.aws_target.clone(), 60),
            (
                Some("ferry-heroku".into()),
                traffic.heroku_target.clone(),
                60
            ),
        ],
        "both records with their targets and the spec's TTL"
    );

    let err = router
        .set_weights(&traffic, Weights { heroku: 0, aws: 0 })
        .await
        .expect_err("both zero would split evenly");
    assert_eq!(err.step_error_name(), "Ferry.Blocked.RecordRefused");
    traffic.hosted_zone_id = "ZNOSUCHZONE123".into();
    let err = router.weights(&traffic).await.expect_err("no such zone");
    assert_eq!(err.step_error_name(), "Ferry.Blocked.HostedZone", "{err}");
}

/// One CNAME change: action, name, set identifier and weight, value, TTL.
type CnameChange<'a> = (ChangeAction, &'a str, Option<(&'a str, i64)>, &'a str, i64);

/// One change batch of `changes`.
async fn submit(
    client: &aws_sdk_route53::Client,
    zone: &str,
    changes: &[CnameChange<'_>],
) -> Result<(), String> {
    let mut batch = ChangeBatch::builder();
    for (action, name, weighted, value, ttl) in changes {
        let mut rrs = ResourceRecordSet::builder()
            .name(*name)
            .r#type(RrType::Cname)
            .ttl(*ttl)
            .resource_records(ResourceRecord::builder().value(*value).build().expect("rr"));
        if let Some((id, weight)) = weighted {
            rrs = rrs.set_identifier(*id).weight(*weight);
        }
        batch = batch.changes(
            Change::builder()
                .action(action.clone())
                .resource_record_set(rrs.build().expect("rrs"))
                .build()
                .expect("change"),
        );
    }
    client
        .change_resource_record_sets()
        .hosted_zone_id(zone)
        .change_batch(batch.build().expect("batch"))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| {
            use aws_sdk_route53::error::ProvideErrorMetadata;
            format!(
                "{}: {}",
                e.code().unwrap_or("?"),
                e.message().unwrap_or("no message")
            )
        })
}

#[tokio::test]
async fn the_bed_refuses_what_route53_refuses() {
    let aws = ferry_tests::aws::config().await;
    let client = aws_sdk_route53::Client::new(&aws);
    let (zone, domain) = ferry_tests::aws::hosted_zone(&aws).await;
    let app = format!("app.{domain}");
    ferry_tests::aws::app_record(&aws, &zone, &app, "acme-prod-123.herokudns.com").await;
    use ChangeAction::{Create, Delete, Upsert};

    // The batch the router sent before: two weighted UPSERTs beside the app's simple CNAME.
    let err = submit(
        &client,
        &zone,
        &[
            (
                Upsert,
                &app,
                Some(("ferry-heroku", 99)),
                "acme-prod-123.herokudns.com",
                60,
            ),
            (Upsert, &app, Some(("ferry-aws", 1)), "alb.example.com", 60),
        ],
    )
    .await
    .expect_err("a weighted set beside a simple one");
    assert!(
        err.starts_with("InvalidChangeBatch") && err.contains("non-weighted set exists"),
        "{err}"
    );
    // A CNAME at the apex.
    let err = submit(
        &client,
        &zone,
        &[(Create, &domain, None, "x.example.com", 60)],
    )
    .await
    .expect_err("apex CNAME");
    assert!(err.contains("not permitted at apex"), "{err}");
    // A DELETE whose TTL differs from the stored record's.
    let err = submit(
        &client,
        &zone,
        &[(Delete, &app, None, "acme-prod-123.herokudns.com", 60)],
    )
    .await
    .expect_err("inexact delete");
    assert!(err.contains("do not match"), "{err}");
    // Atomic: a valid first change is not applied when a later one is refused.
    let other = format!("other.{domain}");
    let err = submit(
        &client,
        &zone,
        &[
            (Create, &other, None, "x.example.com", 60),
            (
                Delete,
                &format!("missing.{domain}"),
                None,
                "y.example.com",
                60,
            ),
        ],
    )
    .await
    .expect_err("second change refused");
    assert!(err.contains("not found"), "{err}");
    assert_eq!(
        ferry_tests::aws::records_at(&aws, &zone, &other).await,
        vec![],
        "nothing of a refused batch is applied"
    );
    assert_eq!(
        ferry_tests::aws::records_at(&aws, &zone, &app).await,
        vec![(None, "acme-prod-123.herokudns.com".into(), 300)],
        "the app's record untouched"
    );
}

#[tokio::test]
async fn the_first_move_replaces_the_apps_cname_and_a_rollback_puts_it_back() {
    let aws = ferry_tests::aws::config().await;
    let client = aws_sdk_route53::Client::new(&aws);
    let (zone, domain) = ferry_tests::aws::hosted_zone(&aws).await;
    let mut traffic = spec("m", "acme-prod").traffic;
    traffic.hosted_zone_id = zone.clone();
    traffic.record_name = format!("app.{domain}");
    ferry_tests::aws::app_record(&aws, &zone, &traffic.record_name, &traffic.heroku_target).await;
    let router = ferry_aws::Route53Router::new(client.clone());

    let state = router.inspect(&traffic).await.expect("inspect");
    assert_eq!(state.zone_name.trim_end_matches('.'), domain);
    let replaced = state
        .plan(&traffic)
        .expect("plan")
        .expect("a record to replace");
    assert_eq!(replaced.ttl, 300);

    router
        .set_weights(&traffic, Weights::for_aws_percent(1))
        .await
        .expect("the first move replaces the simple record in its batch");
    let records = ferry_tests::aws::records_at(&aws, &zone, &traffic.record_name).await;
    assert_eq!(
        records.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
        vec![Some("ferry-aws".into()), Some("ferry-heroku".into())],
        "{records:?}"
    );
    router
        .set_weights(&traffic, Weights::for_aws_percent(50))
        .await
        .expect("a later move");

    assert!(router.restore(&traffic, &replaced).await.expect("restore"));
    assert_eq!(
        ferry_tests::aws::records_at(&aws, &zone, &traffic.record_name).await,
        vec![(None, traffic.heroku_target.clone(), 300)],
        "the simple CNAME back as it was, the pair gone"
    );
    assert!(!router.restore(&traffic, &replaced).await.expect("again"));
    assert_eq!(router.weights(&traffic).await.expect("read"), None);

    // Preflight's view of an apex name and of a record that is not a CNAME.
    let mut apex = traffic.clone();
    apex.record_name = domain.clone();
    let problems = router
        .inspect(&apex)
        .await
        .expect("inspect apex")
        .plan(&apex)
        .expect_err("apex refused");
    assert!(problems.iter().any(|p| p.contains("apex")), "{problems:?}");
}
