//! What faces the network: the security groups (load balancer → app → data, and Ferry's tasks
//! → data), the HTTPS load balancer with its certificate, and the alarms the canary reads.

use serde_json::json;

use super::{Input, Template, att, compute::APP_PORT, r, skips, sub};

pub(super) fn security_groups(t: &mut Template, input: &Input) {
    let group = |description: &str, ingress: serde_json::Value| {
        json!({
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {"GroupDescription": description, "VpcId": super::network::vpc(), "SecurityGroupIngress": ingress},
        })
    };
    let mut alb = group(
        "The load balancer: HTTPS (and HTTP, redirected) from anywhere",
        json!([
            {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIp": "0.0.0.0/0", "Description": "HTTPS from clients"},
            {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "CidrIp": "0.0.0.0/0", "Description": "HTTP, redirected to HTTPS"},
        ]),
    );
    alb["Metadata"] = skips(&[(
        "CKV_AWS_260",
        "Port 80 only answers with a redirect to HTTPS.",
    )]);
    t.resource("LoadBalancerSecurityGroup", alb);
    t.resource(
        "AppSecurityGroup",
        group(
            "The app tasks: the web port from the load balancer only",
            json!([{"IpProtocol": "tcp", "FromPort": APP_PORT, "ToPort": APP_PORT, "SourceSecurityGroupId": r("LoadBalancerSecurityGroup"), "Description": "web from the load balancer"}]),
        ),
    );
    t.output(
        "AppSecurityGroupId",
        "The app's tasks' security group: Ferry's stack admits it to the database endpoint",
        att("AppSecurityGroup", "GroupId"),
    );
    let mut data = Vec::new();
    if crate::sizing::database_addon(input.inventory).is_some() {
        data.push(("DatabaseSecurityGroup", 5432, "PostgreSQL"));
    }
    if input
        .inventory
        .addons
        .iter()
        .any(crate::sizing::is_key_value)
    {
        data.push(("CacheSecurityGroup", 6379, "Redis"));
    }
    if !data.is_empty() {
        t.parameter(
            "FerrySecurityGroupId",
            json!({"Type": "String", "Default": "", "Description": "The security group of Ferry's worker and endpoint tasks (Ferry's stack), admitted to RDS and ElastiCache. Empty admits none."}),
        );
        t.condition(
            "HasFerry",
            json!({"Fn::Not": [{"Fn::Equals": [r("FerrySecurityGroupId"), ""]}]}),
        );
    }
    for (name, port, what) in data {
        t.resource(
            name,
            group(
                &format!("{what}: from the app tasks and Ferry tasks"),
                json!([{"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "SourceSecurityGroupId": r("AppSecurityGroup"), "Description": format!("{what} from the app")}]),
            ),
        );
        t.resource(
            &format!("{name}FromFerry"),
            json!({
                "Type": "AWS::EC2::SecurityGroupIngress",
                "Condition": "HasFerry",
                "Properties": {
                    "GroupId": att(name, "GroupId"),
                    "IpProtocol": "tcp",
                    "FromPort": port,
                    "ToPort": port,
                    "SourceSecurityGroupId": r("FerrySecurityGroupId"),
                    "Description": format!("{what} from Ferry worker and endpoint"),
                },
            }),
        );
    }
}

pub(super) fn load_balancer(t: &mut Template, input: &Input) {
    if !crate::sizing::has_web(input.inventory) {
        return;
    }
    let domain = input
        .inventory
        .domains
        .iter()
        .find(|d| d.kind == "custom")
        .map(|d| d.hostname.clone());
    let mut name = json!({"Type": "String", "AllowedPattern": "^[A-Za-z0-9*][A-Za-z0-9.*-]{0,252}$", "Description": "The app's domain: the certificate's name, validated in HostedZoneId."});
    if let Some(d) = domain {
        name["Default"] = json!(d);
    }
    t.parameter("DomainName", name);
    t.parameter(
        "HostedZoneId",
        json!({"Type": "AWS::Route53::HostedZone::Id", "Description": "The Route 53 hosted zone serving the domain (the certificate is validated there; Ferry's canary writes its records there)."}),
    );
    t.output(
        "HostedZoneId",
        "traffic.hosted_zone_id in migration.json",
        r("HostedZoneId"),
    );
    t.parameter(
        "HealthCheckPath",
        json!({"Type": "String", "Default": "/", "AllowedPattern": "^/[\\x21-\\x7e]{0,1023}$", "Description": "A path the web process answers 200 on without logging in."}),
    );
    t.resource(
        "Certificate",
        json!({
            "Type": "AWS::CertificateManager::Certificate",
            "Properties": {
                "DomainName": r("DomainName"),
                "ValidationMethod": "DNS",
                "DomainValidationOptions": [{"DomainName": r("DomainName"), "HostedZoneId": r("HostedZoneId")}],
            },
        }),
    );
    balancer(t);
    listeners(t);
    alarms(t);
}

fn balancer(t: &mut Template) {
    t.resource(
        "LoadBalancer",
        json!({
            "Type": "AWS::ElasticLoadBalancingV2::LoadBalancer",
            "Metadata": skips(&[("CKV_AWS_91", "Access logs need a bucket with a policy for the region's load balancer account; the team adds one if it wants them.")]),
            "Properties": {
                "Type": "application",
                "Scheme": "internet-facing",
                "Subnets": super::network::public_subnets(),
                "SecurityGroups": [r("LoadBalancerSecurityGroup")],
                "LoadBalancerAttributes": [
                    {"Key": "routing.http.drop_invalid_header_fields.enabled", "Value": "true"},
                    {"Key": "deletion_protection.enabled", "Value": "true"},
                ],
            },
        }),
    );
    t.output(
        "LoadBalancerDnsName",
        "The load balancer's name: traffic.aws_target in migration.json",
        att("LoadBalancer", "DNSName"),
    );
    t.resource(
        "WebTargetGroup",
        json!({
            "Type": "AWS::ElasticLoadBalancingV2::TargetGroup",
            "Properties": {
                "TargetType": "ip",
                "Protocol": "HTTP",
                "Port": APP_PORT,
                "VpcId": super::network::vpc(),
                "HealthCheckPath": r("HealthCheckPath"),
                "HealthCheckIntervalSeconds": 10,
                "HealthyThresholdCount": 2,
                "Matcher": {"HttpCode": "200-399"},
                // Heroku gives a dyno 30 s to finish its requests when it stops.
                "TargetGroupAttributes": [{"Key": "deregistration_delay.timeout_seconds", "Value": "30"}],
            },
        }),
    );
}

fn listeners(t: &mut Template) {
    t.resource(
        "HttpListener",
        json!({
            "Type": "AWS::ElasticLoadBalancingV2::Listener",
            "Properties": {
                "LoadBalancerArn": r("LoadBalancer"),
                "Port": 80,
                "Protocol": "HTTP",
                "DefaultActions": [{"Type": "redirect", "RedirectConfig": {"Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"}}],
            },
        }),
    );
    t.resource(
        "HttpsListener",
        json!({
            "Type": "AWS::ElasticLoadBalancingV2::Listener",
            "Properties": {
                "LoadBalancerArn": r("LoadBalancer"),
                "Port": 443,
                "Protocol": "HTTPS",
                "SslPolicy": "ELBSecurityPolicy-TLS13-1-2-2021-06",
                "Certificates": [{"CertificateArn": r("Certificate")}],
                "DefaultActions": [{"Type": "forward", "TargetGroupArn": r("WebTargetGroup")}],
            },
        }),
    );
    t.output(
        "HealthUrl",
        "An https:// URL the canary's health gate reads (traffic.health.url)",
        sub("https://${DomainName}${HealthCheckPath}"),
    );
}

/// The load balancer's view of the web process, for the canary's health gate
/// (`traffic.health.alarm_names`).
fn alarms(t: &mut Template) {
    let dims =
        json!([{"Name": "LoadBalancer", "Value": att("LoadBalancer", "LoadBalancerFullName")}]);
    t.resource(
        "Web5xxAlarm",
        json!({
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": {
                "AlarmDescription": "The web process answers 5xx (the canary sends traffic back to Heroku)",
                "Namespace": "AWS/ApplicationELB",
                "MetricName": "HTTPCode_Target_5XX_Count",
                "Dimensions": dims,
                "Statistic": "Sum",
                "Period": 60,
                "EvaluationPeriods": 1,
                "Threshold": 5,
                "ComparisonOperator": "GreaterThanThreshold",
                "TreatMissingData": "notBreaching",
            },
        }),
    );
    let mut tg = dims.clone();
    tg.as_array_mut().expect("list").push(
        json!({"Name": "TargetGroup", "Value": att("WebTargetGroup", "TargetGroupFullName")}),
    );
    t.resource(
        "WebUnhealthyAlarm",
        json!({
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": {
                "AlarmDescription": "A web task fails the load balancer's health check",
                "Namespace": "AWS/ApplicationELB",
                "MetricName": "UnHealthyHostCount",
                "Dimensions": tg,
                "Statistic": "Maximum",
                "Period": 60,
                "EvaluationPeriods": 2,
                "Threshold": 0,
                "ComparisonOperator": "GreaterThanThreshold",
                "TreatMissingData": "notBreaching",
            },
        }),
    );
    t.output(
        "HealthAlarmNames",
        "The alarms for traffic.health.alarm_names, comma-separated",
        json!({"Fn::Join": [",", [r("Web5xxAlarm"), r("WebUnhealthyAlarm")]]}),
    );
}
