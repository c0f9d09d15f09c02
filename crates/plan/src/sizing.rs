//! The sizes the plan chooses for the AWS side, in one place: the plan prices them and the
//! destination stack creates them, so the cost table prices exactly what the stack makes.

use crate::{
    inventory::{AddOnInfo, Inventory, Process},
    prices::{CacheNode, PostgresPlan, Prices, RdsClass, TaskSize},
};

/// The Fargate task size replacing a process type's dyno size, when the table has it.
pub fn task_size(p: &Process, prices: &Prices) -> Option<TaskSize> {
    p.size
        .as_deref()
        .and_then(|s| prices.aws.dyno_to_fargate.get(s).copied())
}

/// The RDS instance replacing a Heroku Postgres plan.
#[derive(Debug, Clone, PartialEq)]
pub struct RdsChoice<'a> {
    /// The Heroku plan.
    pub plan: &'a PostgresPlan,
    /// The instance class (`db.m7g.large`).
    pub class_name: &'a str,
    /// Its figures.
    pub class: &'a RdsClass,
    /// gp3 storage: 1.5 × today's size (room to grow and for the copy's index builds), at
    /// least 20 GB; the plan's limit when the size is unknown.
    pub storage_gb: f64,
    /// Whether today's size is known.
    pub size_known: bool,
    /// Multi-AZ when the plan has a standby.
    pub multi_az: bool,
    /// The source's major version, when known: the instance runs it or newer.
    pub source_major: Option<i32>,
}

/// Why no RDS instance could be chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum NoRds<'a> {
    /// The plan is not in the price table.
    UnknownPlan,
    /// No class in the table has the plan's memory.
    NoClass(&'a PostgresPlan),
}

/// The cheapest class with at least the plan's memory (burstable only for small plans without
/// a standby), and the storage the database needs.
pub fn rds_choice<'a>(
    inventory: &Inventory,
    addon: &AddOnInfo,
    prices: &'a Prices,
) -> Result<RdsChoice<'a>, NoRds<'a>> {
    let plan = prices
        .heroku
        .postgres
        .get(&addon.plan)
        .ok_or(NoRds::UnknownPlan)?;
    let small = plan.ram_gb <= 4.0 && !plan.ha;
    let (class_name, class) = prices
        .aws
        .rds_postgres
        .iter()
        .filter(|(_, c)| c.ram_gb >= plan.ram_gb && (small || !c.burstable))
        .min_by(|(_, x), (_, y)| x.hourly.total_cmp(&y.hourly))
        .ok_or(NoRds::NoClass(plan))?;
    let db = inventory.database.as_ref();
    let size_gb = db.map(|d| d.size_bytes as f64 / 1e9);
    Ok(RdsChoice {
        plan,
        class_name,
        class,
        storage_gb: size_gb.map_or(plan.storage_gb, |gb| (gb * 1.5).ceil().max(20.0)),
        size_known: size_gb.is_some(),
        multi_az: plan.ha,
        source_major: db.map(|d| d.preflight.source.major),
    })
}

/// The Heroku Postgres add-on attached as DATABASE: the one the migration moves (and the stack
/// gives an RDS instance).
pub fn database_addon(inv: &crate::inventory::Inventory) -> Option<&AddOnInfo> {
    inv.addons
        .iter()
        .find(|a| a.service == "heroku-postgresql" && a.attached_as.iter().any(|n| n == "DATABASE"))
}

/// Whether the app has a web process type: the stack puts it behind a load balancer (with its
/// certificate and the canary's two alarms), whatever its dyno count today.
pub fn has_web(inv: &crate::inventory::Inventory) -> bool {
    inv.processes.iter().any(|p| p.process_type == "web")
}

/// Whether an add-on is Heroku's own Key-Value Store (Redis).
pub fn is_key_value(a: &AddOnInfo) -> bool {
    matches!(
        a.service.as_str(),
        "heroku-redis" | "heroku-key-value-store"
    )
}

/// The cheapest ElastiCache node with at least the Key-Value Store plan's memory.
pub fn cache_node<'a>(a: &AddOnInfo, prices: &'a Prices) -> Option<(&'a str, &'a CacheNode)> {
    let plan = prices.heroku.key_value.get(&a.plan)?;
    prices
        .aws
        .elasticache
        .iter()
        .filter(|(_, n)| n.memory_mb >= plan.memory_mb)
        .min_by(|(_, x), (_, y)| x.hourly.total_cmp(&y.hourly))
        .map(|(name, n)| (name.as_str(), n))
}
