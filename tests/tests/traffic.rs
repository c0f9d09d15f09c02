//! The Route 53 weighted pair against the AWS emulator.

use aws_sdk_route53::types::HostedZoneConfig;
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
    let sets = client
        .list_resource_record_sets()
        .hosted_zone_id(&traffic.hosted_zone_id)
        .send()
        .await
        .expect("list");
    let ours: Vec<(String, String, i64)> = sets
        .resource_record_sets()
        .iter()
        .filter(|r| r.set_identifier().is_some())
        .map(|r| {
            (
                r.set_identifier().unwrap_or_default().to_string(),
                r.resource_records()
                    .first()
                    .map(|v| v.value().to_string())
                    .unwrap_or_default(),
                r.ttl().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(ours.len(), 2, "{ours:?}");
    assert!(
        ours.contains(&("ferry-heroku".into(), traffic.heroku_target.clone(), 60)),
        "{ours:?}"
    );
    assert!(
        ours.contains(&("ferry-aws".into(), traffic.aws_target.clone(), 60)),
        "{ours:?}"
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
