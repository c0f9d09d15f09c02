//! [`Databases`] on RDS.

use async_trait::async_trait;
use aws_sdk_rds::Client;
use ferry_core::cloud::{CloudResult, Databases, DbInstance, Service};

use crate::cloud::{classify, code};

/// RDS instances and parameter groups.
#[derive(Debug, Clone)]
pub struct RdsDatabases {
    client: Client,
}

impl RdsDatabases {
    /// Reads through `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl Databases for RdsDatabases {
    async fn instance(&self, id: &str) -> CloudResult<Option<DbInstance>> {
        let out = match self
            .client
            .describe_db_instances()
            .db_instance_identifier(id)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) if code(&e) == Some("DBInstanceNotFound") => return Ok(None),
            Err(e) => return Err(classify(Service::Rds, "DescribeDBInstances", e)),
        };
        Ok(out.db_instances().first().map(|i| DbInstance {
            status: i.db_instance_status().unwrap_or("unknown").to_string(),
            engine: i.engine().unwrap_or("unknown").to_string(),
            engine_version: i.engine_version().unwrap_or("0").to_string(),
            parameter_group: i
                .db_parameter_groups()
                .first()
                .and_then(|g| g.db_parameter_group_name())
                .map(str::to_string),
            endpoint: i.endpoint().and_then(|e| e.address()).map(str::to_string),
            master_username: i.master_username().map(str::to_string),
            master_secret_arn: i
                .master_user_secret()
                .and_then(|m| m.secret_arn())
                .map(str::to_string),
        }))
    }

    async fn parameter(&self, group: &str, name: &str) -> CloudResult<Option<String>> {
        let mut marker = None;
        loop {
            let out = self
                .client
                .describe_db_parameters()
                .db_parameter_group_name(group)
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| classify(Service::Rds, "DescribeDBParameters", e))?;
            if let Some(p) = out
                .parameters()
                .iter()
                .find(|p| p.parameter_name() == Some(name))
            {
                return Ok(p.parameter_value().map(str::to_string));
            }
            match out.marker {
                Some(m) if !m.is_empty() => marker = Some(m),
                _ => return Ok(None),
            }
        }
    }
}
