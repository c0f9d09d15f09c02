//! RDS for PostgreSQL sized as the plan prices it, and ElastiCache set up for Ferry's Redis
//! sync when the app has a Key-Value Store.

use serde_json::json;

use super::{Input, Template, att, r, skips, sub};
use crate::sizing::{self, NoRds};

/// RDS's newest PostgreSQL major, the default when the source's is older or unknown.
const NEWEST_MAJOR: i32 = 17;

pub(super) fn database(t: &mut Template, input: &Input) {
    let inv = input.inventory;
    let Some(addon) = sizing::database_addon(inv) else {
        return;
    };
    let (class, storage, multi_az) = match sizing::rds_choice(inv, addon, input.prices) {
        Ok(c) => (c.class_name.to_string(), c.storage_gb as u64, c.multi_az),
        // A plan the table does not know: a modest default the team resizes.
        Err(NoRds::UnknownPlan | NoRds::NoClass(_)) => ("db.m7g.large".into(), 100, false),
    };
    let major = inv
        .database
        .as_ref()
        .map(|d| d.preflight.source.major)
        .unwrap_or(NEWEST_MAJOR)
        .max(12);
    t.parameter(
        "DatabaseEngineVersion",
        json!({"Type": "String", "Default": major.to_string(), "AllowedPattern": "^[0-9]{2}(\\.[0-9]+)?$", "Description": "PostgreSQL on RDS: the source's major (Heroku's) or newer."}),
    );
    t.resource(
        "DatabaseSubnets",
        json!({"Type": "AWS::RDS::DBSubnetGroup", "Properties": {"DBSubnetGroupDescription": "The app's database: private subnets", "SubnetIds": super::network::private_subnets()}}),
    );
    t.resource(
        "DatabaseParameters",
        json!({
            "Type": "AWS::RDS::DBParameterGroup",
            "Properties": {
                "Description": "The app's database: TLS only, the source's preloaded extensions",
                "Family": sub("postgres${DatabaseEngineVersion}"),
                "Parameters": parameters(inv),
            },
        }),
    );
    instance(t, &class, storage, multi_az);
}

/// Extensions RDS loads only when `shared_preload_libraries` names them (RDS's default group
/// names `pg_stat_statements` alone; a group that sets the list must keep it).
const PRELOADED: [&str; 5] = [
    "pg_stat_statements",
    "pg_cron",
    "pgaudit",
    "pg_hint_plan",
    "pg_partman_bgw",
];

/// The parameter group: TLS forced, and the extensions the source uses that RDS must preload
/// (`pg_cron` also runs in `postgres` unless `cron.database_name` is set to the app's database,
/// which is named only when the team creates it).
fn parameters(inv: &crate::inventory::Inventory) -> serde_json::Value {
    let used: Vec<&str> = inv
        .database
        .as_ref()
        .map(|d| {
            d.preflight
                .extensions
                .iter()
                .map(|(n, _)| n.as_str())
                .collect()
        })
        .unwrap_or_default();
    parameters_for(&used)
}

/// [`parameters`] for the source's extension names.
fn parameters_for(used: &[&str]) -> serde_json::Value {
    let mut preload = vec![PRELOADED[0]];
    preload.extend(PRELOADED.iter().skip(1).filter(|e| used.contains(e)));
    let mut params = json!({"rds.force_ssl": "1"});
    if preload.len() > 1 {
        params["shared_preload_libraries"] = json!(preload.join(","));
    }
    params
}

fn instance(t: &mut Template, class: &str, storage: u64, multi_az: bool) {
    let mut skipped = vec![
        (
            "CKV_AWS_161",
            "The app logs in with a password, as on Heroku; IAM authentication is the team's choice to add.",
        ),
        (
            "CKV_AWS_118",
            "Enhanced monitoring needs a role and costs extra; Performance Insights is on.",
        ),
        (
            "CKV_AWS_129",
            "Log exports are the team's choice (they cost per GB ingested).",
        ),
    ];
    if !multi_az {
        skipped.push(("CKV_AWS_157", "The Heroku plan has no standby, so neither has this (Multi-AZ doubles the price); set MultiAZ to true for one."));
    }
    t.resource(
        "Database",
        json!({
            "Type": "AWS::RDS::DBInstance",
            "DeletionPolicy": "Snapshot",
            "UpdateReplacePolicy": "Snapshot",
            "Metadata": skips(&skipped),
            "Properties": {
                "Engine": "postgres",
                "EngineVersion": r("DatabaseEngineVersion"),
                "DBInstanceClass": class,
                "AllocatedStorage": storage.to_string(),
                "MaxAllocatedStorage": storage * 4,
                "StorageType": "gp3",
                "StorageEncrypted": true,
                "MultiAZ": multi_az,
                "MasterUsername": "ferry",
                // RDS keeps (and rotates) the password in Secrets Manager; Ferry follows it
                // through target.password_secret.
                "ManageMasterUserPassword": true,
                "DBSubnetGroupName": r("DatabaseSubnets"),
                "DBParameterGroupName": r("DatabaseParameters"),
                "VPCSecurityGroups": [att("DatabaseSecurityGroup", "GroupId")],
                "PubliclyAccessible": false,
                "DeletionProtection": true,
                "BackupRetentionPeriod": 7,
                "CopyTagsToSnapshot": true,
                "AutoMinorVersionUpgrade": true,
                "EnablePerformanceInsights": true,
            },
        }),
    );
    t.output(
        "DatabaseInstanceId",
        "target.rds_instance_id in migration.json",
        r("Database"),
    );
    t.output(
        "DatabaseEndpoint",
        "The host in the target URL (target.database_url_param)",
        att("Database", "Endpoint.Address"),
    );
    t.output(
        "DatabaseMasterSecretArn",
        "target.password_secret in migration.json (and Ferry's TargetMasterSecretArn)",
        att("Database", "MasterUserSecret.SecretArn"),
    );
}

pub(super) fn cache(t: &mut Template, input: &Input) {
    let Some(kv) = input
        .inventory
        .addons
        .iter()
        .find(|a| sizing::is_key_value(a))
    else {
        return;
    };
    let node = sizing::cache_node(kv, input.prices)
        .map(|(name, _)| name.to_string())
        .unwrap_or_else(|| "cache.t4g.small".into());
    t.resource(
        "CacheSubnets",
        json!({"Type": "AWS::ElastiCache::SubnetGroup", "Properties": {"Description": "The app's Redis: private subnets", "SubnetIds": super::network::private_subnets()}}),
    );
    // What Ferry's sync needs: keyspace events for the reverse sync that keeps Heroku level
    // for a rollback, and no eviction where job queues live.
    t.resource(
        "CacheParameters",
        json!({
            "Type": "AWS::ElastiCache::ParameterGroup",
            "Properties": {
                "CacheParameterGroupFamily": "redis7",
                "Description": "The app's Redis: keyspace events on, no eviction",
                "Properties": {"notify-keyspace-events": "KEA", "maxmemory-policy": "noeviction"},
            },
        }),
    );
    t.resource(
        "CacheAuthToken",
        json!({
            "Type": "AWS::SecretsManager::Secret",
            "Metadata": skips(&[
                ("CKV2_AWS_57", "ElastiCache AUTH tokens are rotated with ModifyReplicationGroup, not by a rotation function; rotate it with the app's deploys."),
                ("CKV_AWS_149", "Encrypted with the account's Secrets Manager key; a customer-managed key is the team's choice to add."),
            ]),
            "Properties": {
                "Description": "The app's Redis AUTH token",
                "GenerateSecretString": {"PasswordLength": 64, "ExcludePunctuation": true},
            },
        }),
    );
    replication_group(t, &node);
}

fn replication_group(t: &mut Template, node: &str) {
    t.resource(
        "Cache",
        json!({
            "Type": "AWS::ElastiCache::ReplicationGroup",
            "DeletionPolicy": "Snapshot",
            "UpdateReplacePolicy": "Snapshot",
            "Properties": {
                "ReplicationGroupDescription": sub("${AWS::StackName} Redis"),
                "Engine": "redis",
                "EngineVersion": "7.1",
                "CacheNodeType": node,
                // One node, as the plan prices it; 2 with failover for a replica.
                "NumCacheClusters": 1,
                "AutomaticFailoverEnabled": false,
                "CacheParameterGroupName": r("CacheParameters"),
                "CacheSubnetGroupName": r("CacheSubnets"),
                "SecurityGroupIds": [att("CacheSecurityGroup", "GroupId")],
                "TransitEncryptionEnabled": true,
                "AtRestEncryptionEnabled": true,
                "AuthToken": sub("{{resolve:secretsmanager:${CacheAuthToken}:SecretString}}"),
                "SnapshotRetentionLimit": 7,
                "AutoMinorVersionUpgrade": true,
            },
        }),
    );
    t.output(
        "CacheEndpoint",
        "The host of the ElastiCache URL (redis.target_url_param: rediss://:<token>@host:6379)",
        att("Cache", "PrimaryEndPoint.Address"),
    );
    t.output(
        "CacheAuthTokenArn",
        "The secret holding the ElastiCache AUTH token",
        r("CacheAuthToken"),
    );
}

#[cfg(test)]
mod tests {
    use super::parameters_for;

    #[test]
    fn extensions_rds_must_preload_are_named_beside_pg_stat_statements() {
        assert_eq!(
            parameters_for(&["pg_stat_statements", "hstore", "citext"]),
            serde_json::json!({"rds.force_ssl": "1"}),
            "RDS's default list already has pg_stat_statements; nothing else needs preloading"
        );
        assert_eq!(
            parameters_for(&["pgaudit", "hstore", "pg_cron"]),
            serde_json::json!({"rds.force_ssl": "1", "shared_preload_libraries": "pg_stat_statements,pg_cron,pgaudit"}),
            "a list that is set keeps pg_stat_statements"
        );
    }
}
