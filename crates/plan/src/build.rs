//! From an inventory to a plan: each Heroku part mapped to its AWS target, both sides priced
//! from the price table, blockers and warnings, and a `migration.json` to start from.

use std::collections::BTreeSet;

use ferry_core::problems::{child, index};
use ferry_pg::preflight::Severity;
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    inventory::{AddOnInfo, Inventory, Process},
    prices::{Prices, TaskSize},
};

/// What a plan is built with besides the inventory.
#[derive(Debug, Clone)]
pub struct Options {
    /// The Fargate architecture priced for the app's containers (`x86_64` or `arm64`).
    pub architecture: String,
    /// Today, `YYYY-MM-DD` (names the migration).
    pub today: String,
}

/// How closely an AWS service replaces the Heroku part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Equivalence {
    /// The same thing on AWS; configuration carries over.
    Direct,
    /// An AWS service does the job, with changes to the app or its configuration.
    Replace,
    /// No AWS service: keep the vendor and pay it directly.
    KeepVendor,
    /// Nothing Ferry knows replaces it: a person decides.
    None,
}

/// One Heroku part and where it goes.
#[derive(Debug, Clone, Serialize)]
pub struct Mapping {
    /// `process`, `database`, `add-on`, `domain`, `config vars`, `routing`, `network`,
    /// `operations`.
    pub category: String,
    /// The Heroku part.
    pub heroku: String,
    /// Its AWS target.
    pub aws: String,
    /// How close the match is.
    pub equivalence: Equivalence,
    /// Heroku's monthly price for it, if known.
    pub heroku_monthly: Option<f64>,
    /// The AWS target's monthly price, if known.
    pub aws_monthly: Option<f64>,
    /// What to know.
    pub notes: Vec<String>,
}

/// What destination.yaml creates beside the services and data stores, priced so the table
/// adds up to the stack: the new VPC's NAT gateway and its address (none when the team
/// deploys into its own VPC), the secrets (RDS's master, Redis's AUTH token) and the canary's
/// two alarms.
fn stack_parts(inventory: &Inventory, prices: &Prices) -> Vec<Mapping> {
    let aws = &prices.aws;
    let web = crate::sizing::has_web(inventory);
    let database = crate::sizing::database_addon(inventory).is_some();
    let redis = inventory.addons.iter().any(crate::sizing::is_key_value);
    let secrets = u32::from(database) + u32::from(redis);
    let alarms: u32 = if web { 2 } else { 0 };
    let mut out = vec![Mapping {
        category: "network".into(),
        heroku: "Heroku's network and outbound connections (included)".into(),
        aws: "a VPC across two zones with one NAT gateway and its public IPv4 address (destination.yaml's new VPC)".into(),
        equivalence: Equivalence::Direct,
        heroku_monthly: Some(0.0),
        aws_monthly: Some(prices.month(aws.nat_gateway_hourly + aws.public_ipv4_hourly)),
        notes: vec![
            "plus NAT data processing per GB; none of this when the stack is deployed into your VPC (VpcId)".into(),
        ],
    }];
    if secrets + alarms > 0 {
        out.push(Mapping {
            category: "operations".into(),
            heroku: "credentials in config vars, Heroku's metrics alerts (included)".into(),
            aws: format!(
                "Secrets Manager: {secrets} secret(s) (RDS's master password, Redis's AUTH token); CloudWatch: {alarms} alarm(s) for the canary"
            ),
            equivalence: Equivalence::Direct,
            heroku_monthly: Some(0.0),
            aws_monthly: Some(f64::from(secrets) * aws.secret_monthly + f64::from(alarms) * aws.alarm_monthly),
            notes: vec!["plus CloudWatch Logs by GB ingested and stored".into()],
        });
    }
    out
}

/// A blocker or warning.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Issue {
    /// A stable code.
    pub code: String,
    /// The object concerned.
    pub subject: Option<String>,
    /// What was found.
    pub message: String,
    /// What to do.
    pub fix: String,
}

/// A field of the generated spec that only the user can fill in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FillIn {
    /// Its JSON path, as `ferry validate` names it.
    pub path: String,
    /// What goes there.
    pub what: String,
}

/// Monthly totals.
#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    /// Heroku, the parts with a price.
    pub heroku_monthly: f64,
    /// AWS, the parts with a price.
    pub aws_monthly: f64,
    /// Parts left out of a total because no price is known, per side.
    pub heroku_not_priced: Vec<String>,
    /// See `heroku_not_priced`.
    pub aws_not_priced: Vec<String>,
}

/// Where the prices came from.
#[derive(Debug, Clone, Serialize)]
pub struct PriceInfo {
    /// Compiled on.
    pub as_of: String,
    /// AWS region priced.
    pub aws_region: String,
    /// Fargate architecture priced.
    pub architecture: String,
    /// Sources.
    pub sources: Vec<String>,
    /// Caveat.
    pub caveat: String,
}

/// The plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The app.
    pub app: String,
    /// The prices used.
    pub prices: PriceInfo,
    /// What the app is made of.
    pub inventory: Inventory,
    /// Part by part.
    pub mappings: Vec<Mapping>,
    /// The totals.
    pub totals: Totals,
    /// What stops a migration until fixed.
    pub blockers: Vec<Issue>,
    /// What a person should know.
    pub warnings: Vec<Issue>,
    /// A migration spec to start from.
    pub migration: Value,
    /// Its fields only the user can fill in; `ferry validate` refuses it until they are.
    pub fill_in: Vec<FillIn>,
}

const PLACEHOLDER: &str = "FILL-IN: ";

fn issue(code: &str, subject: Option<&str>, message: String, fix: &str) -> Issue {
    Issue {
        code: code.into(),
        subject: subject.map(str::to_string),
        message,
        fix: fix.into(),
    }
}

/// What the endpoint (PgBouncer in transaction pooling) asks of the app, or that the app is
/// already known to work that way (Heroku's own connection pooling is PgBouncer in
/// transaction mode).
fn transaction_pooling(inventory: &Inventory) -> Issue {
    let pooled = inventory
        .config_vars
        .iter()
        .any(|v| v.name == "DATABASE_CONNECTION_POOL_URL");
    if pooled {
        issue(
            "transaction_pooling",
            Some("DATABASE_CONNECTION_POOL_URL"),
            "the app already uses Heroku's connection pooling (PgBouncer in transaction mode): it is known to work through Ferry's endpoint".into(),
            "nothing to change; point the AWS fleet's DATABASE_URL at the endpoint days before the window (config sync does)",
        )
    } else {
        issue(
            "transaction_pooling",
            None,
            "on AWS the app reaches its database through Ferry's endpoint (PgBouncer 1.24, transaction pooling, protocol-level prepared statements kept), so the cutover holds queries instead of failing them".into(),
            "check the app keeps no session state between transactions: Rails `advisory_locks: false` (prepared_statements may stay on), Django `DISABLE_SERVER_SIDE_CURSORS = True`, no session-level SET (use SET LOCAL), no LISTEN/NOTIFY, no WITH HOLD cursors or temp tables across transactions; otherwise set cutover.endpoint to \"redeploy\" (a redeploy at cutover: failed writes until the new tasks are up)",
        )
    }
}

/// The add-on attached as DATABASE, whatever its service (a non-Postgres one blocks).
fn attached_database(inventory: &Inventory) -> Option<&AddOnInfo> {
    inventory
        .addons
        .iter()
        .find(|a| a.attached_as.iter().any(|n| n == "DATABASE"))
}

/// What the plan found, as it is gathered: the mapping rows, the blockers and the warnings.
#[derive(Default)]
struct Found {
    mappings: Vec<Mapping>,
    blockers: Vec<Issue>,
    warnings: Vec<Issue>,
}

impl Found {
    /// A row per process type (priced at `rate`, the architecture's Fargate rate), the load
    /// balancer when web runs, and what the stack adds beside them.
    fn processes(
        &mut self,
        inventory: &Inventory,
        prices: &Prices,
        rate: Option<&crate::prices::FargateRate>,
    ) {
        let app = &inventory.app.name;
        for p in &inventory.processes {
            self.mappings.push(process_mapping(
                app,
                p,
                prices,
                rate.map(|r| (r.vcpu_hour, r.gb_hour)),
            ));
            if let Some(size) = &p.size
                && !prices.heroku.dynos.contains_key(size)
            {
                self.warnings.push(issue(
                    "dyno_size_unpriced",
                    Some(&p.process_type),
                    format!("dyno size {size} is not in the price table"),
                    "add it under heroku.dynos and aws.dyno_to_fargate in a --prices file",
                ));
            }
            if p.in_procfile == Some(false) {
                self.warnings.push(issue(
                    "not_in_procfile",
                    Some(&p.process_type),
                    format!(
                        "the formation has {} but the Procfile does not: the next deploy drops it",
                        p.process_type
                    ),
                    "add it to the Procfile or scale it to 0 before you plan its AWS service",
                ));
            }
        }
        // The stack's load balancer: there whenever web is, as the stack makes it.
        if crate::sizing::has_web(inventory) {
            self.mappings.push(Mapping {
                category: "routing".into(),
                heroku: "Heroku router and SSL (included)".into(),
                aws: "Application Load Balancer with an ACM certificate".into(),
                equivalence: Equivalence::Direct,
                heroku_monthly: Some(0.0),
                aws_monthly: Some(prices.aws.alb_monthly),
                notes: vec!["plus load balancer capacity units by traffic".into()],
            });
        }

        self.mappings.extend(stack_parts(inventory, prices));
    }

    /// The database attached as DATABASE, and what the source-only preflight found in it.
    fn database(&mut self, inventory: &Inventory, prices: &Prices) {
        let db_addon = attached_database(inventory);
        match db_addon {
        Some(a) if a.service == "heroku-postgresql" => {
            self.mappings.push(database_mapping(inventory, a, prices));
        }
        Some(a) => self.blockers.push(issue(
            "database_not_heroku_postgres",
            Some(&a.name),
            format!(
                "DATABASE is attached from {} ({}), not Heroku Postgres",
                a.name, a.service
            ),
            "Ferry migrates PostgreSQL; if it is PostgreSQL elsewhere, give its URL in FERRY_PLAN_DATABASE_URL",
        )),
        None => self.blockers.push(issue(
            "no_database",
            None,
            "no add-on is attached as DATABASE".into(),
            "attach the app's Heroku Postgres database as DATABASE (heroku addons:attach … --as DATABASE)",
        )),
    }
        self.warnings.push(transaction_pooling(inventory));
        if let Some(reason) = &inventory.database_unavailable {
            self.warnings.push(issue(
            "database_unreadable",
            None,
            format!("the database could not be analysed: {reason}"),
            "run ferry plan again with FERRY_PLAN_DATABASE_URL set to a credential that can read the catalog; preflight checks again when the migration starts",
        ));
        }
        if let Some(reason) = &inventory.autoscaling_unavailable {
            self.warnings.push(issue(
            "autoscaling_unreadable",
            None,
            format!("web's dyno autoscaling could not be read from Heroku's Metrics API: {reason}"),
            "if web autoscales on Heroku (the dashboard's Resources tab shows it), add an AWS::ApplicationAutoScaling::ScalableTarget for WebService with the same bounds to destination.yaml; without one, web runs the formation's count",
        ));
        }
        if let Some(db) = &inventory.database {
            for f in &db.preflight.findings {
                let target = match f.severity {
                    Severity::Blocker => &mut self.blockers,
                    Severity::Warning => &mut self.warnings,
                    Severity::Info => continue,
                };
                target.push(Issue {
                    code: f.code.to_string(),
                    subject: f.object.clone(),
                    message: f.message.clone(),
                    fix: f.fix.clone(),
                });
            }
        }
    }

    /// Every add-on but the database being moved.
    fn addons(&mut self, inventory: &Inventory, prices: &Prices) {
        let db_addon = attached_database(inventory);
        for a in &inventory.addons {
            if db_addon.is_some_and(|d| d.name == a.name) && a.service == "heroku-postgresql" {
                continue;
            }
            self.mappings.push(addon_mapping(a, prices));
        }
    }

    /// The app's domains, and the hosted zone the canary needs.
    fn domains(&mut self, inventory: &Inventory, prices: &Prices) {
        let custom: Vec<_> = inventory
            .domains
            .iter()
            .filter(|d| d.kind == "custom")
            .collect();
        for d in &inventory.domains {
            self.mappings.push(if d.kind == "custom" {
            Mapping {
                category: "domain".into(),
                heroku: d.hostname.clone(),
                aws: "Route 53: a weighted record pair (Heroku, load balancer) for the canary, then the load balancer alone; ACM certificate".into(),
                equivalence: Equivalence::Direct,
                heroku_monthly: Some(0.0),
                aws_monthly: Some(0.0),
                notes: vec![format!(
                    "its DNS must be served by Route 53 before the traffic shift (today: CNAME to {})",
                    d.cname.as_deref().unwrap_or("?")
                )],
            }
        } else {
            Mapping {
                category: "domain".into(),
                heroku: d.hostname.clone(),
                aws: "nothing: Heroku's own host name stays with Heroku".into(),
                equivalence: Equivalence::None,
                heroku_monthly: Some(0.0),
                aws_monthly: Some(0.0),
                notes: vec!["anything that calls this name must move to a custom domain first".into()],
            }
        });
        }
        if !custom.is_empty() {
            self.mappings.push(Mapping {
                category: "domain".into(),
                heroku: "DNS (at your DNS provider)".into(),
                aws: "a Route 53 hosted zone".into(),
                equivalence: Equivalence::Direct,
                heroku_monthly: Some(0.0),
                aws_monthly: Some(prices.aws.route53_hosted_zone_monthly),
                notes: vec![],
            });
        } else {
            self.blockers.push(issue(
            "no_custom_domain",
            None,
            "the app has no custom domain: Ferry shifts traffic by weighted DNS records on a name you control".into(),
            "add a custom domain to the app (heroku domains:add), serve its zone from Route 53, and move clients to it before migrating",
        ));
        }
    }

    /// The config vars: copied into SSM, by who set them.
    fn config_vars(&mut self, inventory: &Inventory) {
        let app = &inventory.app.name;
        let owned = inventory
            .config_vars
            .iter()
            .filter(|v| v.set_by_addon.is_some())
            .count();
        let meta = inventory
            .config_vars
            .iter()
            .filter(|v| v.set_by_addon.is_none() && v.name.starts_with("HEROKU_"))
            .count();
        let plain = inventory.config_vars.len() - owned - meta;
        self.mappings.push(Mapping {
        category: "config vars".into(),
        heroku: format!("{} config vars", inventory.config_vars.len()),
        aws: format!("SSM Parameter Store SecureStrings under /{app}/config/ (copied by the migration)"),
        equivalence: Equivalence::Direct,
        heroku_monthly: Some(0.0),
        aws_monthly: Some(0.0),
        notes: vec![format!(
            "{plain} set by you are copied; {owned} set by add-ons are copied as they are until you point them at the AWS service; {meta} Heroku metadata vars are skipped"
        )],
    });
    }
}

/// Builds the plan.
pub fn build(inventory: Inventory, prices: &Prices, options: &Options) -> Plan {
    let mut found = Found::default();
    // No rate for the architecture: the processes stay unpriced rather than priced wrong.
    let rate = prices.aws.fargate.get(&options.architecture);
    found.processes(&inventory, prices, rate);
    found.database(&inventory, prices);
    found.addons(&inventory, prices);
    found.domains(&inventory, prices);
    found.config_vars(&inventory);
    let Found {
        mappings,
        blockers,
        mut warnings,
    } = found;
    let app = inventory.app.name.clone();
    let running: BTreeSet<&str> = crate::inventory::running(&inventory);
    let (migration, fill_in) = spec(&inventory, &running, options, &mut warnings);
    let totals = totals(&mappings);
    Plan {
        app,
        prices: PriceInfo {
            as_of: prices.as_of.clone(),
            aws_region: prices.aws_region.clone(),
            architecture: options.architecture.clone(),
            sources: prices.sources.clone(),
            caveat: prices.caveat.clone(),
        },
        inventory,
        mappings,
        totals,
        blockers,
        warnings,
        migration,
        fill_in,
    }
}

fn process_mapping(app: &str, p: &Process, prices: &Prices, rate: Option<(f64, f64)>) -> Mapping {
    let size = p.size.as_deref();
    let task: Option<TaskSize> = crate::sizing::task_size(p, prices);
    let dyno_price = size
        .and_then(|s| prices.heroku.dynos.get(s))
        .map(|d| d.monthly);
    let heroku = match size {
        Some(s) => format!("{}: {} × {s} (`{}`)", p.process_type, p.quantity, p.command),
        None => format!(
            "{}: Procfile only, not scaled (`{}`)",
            p.process_type, p.command
        ),
    };
    let task_text = task
        .map(|t| format!("{} vCPU / {} GB", t.vcpu, t.memory_gb))
        .unwrap_or_else(|| "a task size you choose".into());
    let (aws, equivalence, notes): (String, Equivalence, Vec<String>) = match p.process_type.as_str() {
        "release" => (
            "a one-off ECS task the deploy pipeline runs before the services update".into(),
            Equivalence::Replace,
            vec!["billed only while it runs".into()],
        ),
        "web" => (
            format!("ECS Fargate service {app}/web: {} × {task_text} behind the load balancer", p.quantity),
            Equivalence::Direct,
            vec!["health check path on the target group; the app must listen on $PORT".into()],
        ),
        "clock" | "scheduler" => (
            format!("ECS Fargate service {app}/{}: exactly 1 × {task_text}", p.process_type),
            Equivalence::Direct,
            vec!["or EventBridge Scheduler rules running ECS tasks, if its jobs can run as separate tasks".into()],
        ),
        other => (
            format!("ECS Fargate service {app}/{other}: {} × {task_text}, no load balancer", p.quantity),
            Equivalence::Direct,
            vec![],
        ),
    };
    let mut notes = notes;
    if let Some(note) = size
        .and_then(|s| prices.heroku.dynos.get(s))
        .and_then(|d| d.note.clone())
    {
        notes.push(format!("Heroku price: {note}"));
    }
    if size.is_some() && task.is_none() {
        notes.push("dyno size not in the price table: no Fargate size chosen".into());
    }
    if p.quantity == 0 && p.process_type != "release" {
        notes.push("not running on Heroku: a task definition with desired count 0".into());
    }
    let runs = if p.process_type == "release" {
        0
    } else {
        p.quantity
    };
    let aws_monthly = match (task, rate) {
        (Some(t), Some((vcpu_hour, gb_hour))) => {
            Some(prices.month(t.vcpu * vcpu_hour + t.memory_gb * gb_hour) * f64::from(runs))
        }
        _ if runs == 0 => Some(0.0),
        _ => None,
    };
    let heroku_monthly = match dyno_price {
        Some(m) => Some(m * f64::from(runs)),
        None if runs == 0 => Some(0.0),
        None => None,
    };
    Mapping {
        category: "process".into(),
        heroku,
        aws,
        equivalence,
        heroku_monthly,
        aws_monthly,
        notes,
    }
}

fn database_mapping(inventory: &Inventory, a: &AddOnInfo, prices: &Prices) -> Mapping {
    let mut notes = Vec::new();
    let heroku_monthly =
        a.billed_monthly
            .or(prices.heroku.postgres.get(&a.plan).map(|p| p.monthly));
    let version = inventory
        .database
        .as_ref()
        .map(|d| format!("PostgreSQL {} or newer", d.preflight.source.major))
        .unwrap_or_else(|| "the source's PostgreSQL major or newer".into());
    let unpriced = |aws: String, notes: Vec<String>| Mapping {
        category: "database".into(),
        heroku: format!("Heroku Postgres {} ({})", a.plan, a.name),
        aws,
        equivalence: Equivalence::Direct,
        heroku_monthly,
        aws_monthly: None,
        notes,
    };
    let choice = match crate::sizing::rds_choice(inventory, a, prices) {
        Ok(c) => c,
        Err(crate::sizing::NoRds::UnknownPlan) => {
            notes.push(format!(
                "plan {} is not in the price table: choose an RDS class by the plan's memory",
                a.plan
            ));
            return unpriced("Amazon RDS for PostgreSQL".into(), notes);
        }
        Err(crate::sizing::NoRds::NoClass(plan)) => {
            notes.push(format!(
                "no RDS class in the price table has {} GB of memory",
                plan.ram_gb
            ));
            return unpriced(format!("Amazon RDS for PostgreSQL ({version})"), notes);
        }
    };
    let (plan, class) = (choice.plan, choice.class);
    let storage_gb = choice.storage_gb;
    if !choice.size_known {
        notes.push("database size unknown: storage sized to the plan's limit".into());
    }
    notes.push(format!(
        "{} GB memory on Heroku → {} ({} vCPU, {} GB)",
        plan.ram_gb, choice.class_name, class.vcpu, class.ram_gb
    ));
    if plan.ha {
        notes
            .push("the plan has a standby: Multi-AZ (twice the instance and storage price)".into());
    }
    if let Some(d) = inventory.database.as_ref().filter(|_| choice.size_known) {
        notes.push(format!(
            "{:.2} GB today → {storage_gb} GB gp3",
            d.size_bytes as f64 / 1e9
        ));
    }
    let az = if plan.ha { 2.0 } else { 1.0 };
    Mapping {
        category: "database".into(),
        heroku: format!(
            "Heroku Postgres {} ({}, {} GB memory, {} connections)",
            a.plan, a.name, plan.ram_gb, plan.connections
        ),
        aws: format!(
            "Amazon RDS for PostgreSQL {}{}, {storage_gb} GB gp3 ({version})",
            choice.class_name,
            if plan.ha { " Multi-AZ" } else { "" }
        ),
        equivalence: Equivalence::Direct,
        heroku_monthly,
        aws_monthly: Some(
            az * (prices.month(class.hourly) + storage_gb * prices.aws.rds_storage_gp3_gb_month),
        ),
        notes,
    }
}

/// Where a kind of add-on goes on AWS.
fn addon_target(service: &str) -> (Equivalence, &'static str, &'static str) {
    match service {
        "heroku-postgresql" => (
            Equivalence::Replace,
            "Amazon RDS for PostgreSQL (a follower becomes a read replica; another database needs its own migration)",
            "not migrated by this migration: only the database attached as DATABASE is",
        ),
        "heroku-redis" | "heroku-key-value-store" => (
            Equivalence::Direct,
            "Amazon ElastiCache (Valkey/Redis OSS)",
            "caches refill themselves; for queues, drain them before cutover",
        ),
        "rediscloud" | "redistogo" | "redisgreen" | "redis-enterprise" => (
            Equivalence::Replace,
            "Amazon ElastiCache (Valkey/Redis OSS)",
            "a third-party Redis: ElastiCache replaces it, or keep the vendor",
        ),
        "memcachier" | "memcachedcloud" => (
            Equivalence::Replace,
            "Amazon ElastiCache for Memcached",
            "point the cache client at the cluster endpoint",
        ),
        "scheduler" => (
            Equivalence::Direct,
            "Amazon EventBridge Scheduler rules running ECS tasks",
            "one rule per job; the scheduler's jobs are not in the Platform API, copy them from the dashboard",
        ),
        "papertrail"
        | "logentries"
        | "loggly"
        | "sumologic"
        | "coralogix"
        | "logdna"
        | "mezmo"
        | "solarwinds-observability"
        | "timber-logging" => (
            Equivalence::Replace,
            "Amazon CloudWatch Logs (awslogs driver on the ECS tasks)",
            "priced by volume ingested and stored, not by plan",
        ),
        "heroku-kafka" => (
            Equivalence::Replace,
            "Amazon MSK",
            "topics and consumer offsets need their own migration",
        ),
        "cloudamqp" => (
            Equivalence::Replace,
            "Amazon MQ for RabbitMQ",
            "drain the queues before cutover, or keep the vendor",
        ),
        "bucketeer" | "cloudcube" => (
            Equivalence::Direct,
            "Amazon S3 (the add-on is an S3 bucket already)",
            "copy the objects to your own bucket, or keep reading the add-on's bucket",
        ),
        "sendgrid" | "mailgun" | "postmark" | "mailersend" => (
            Equivalence::Replace,
            "Amazon SES",
            "a different API: either keep the vendor (its API works from AWS) or change the mail client",
        ),
        "newrelic" | "scout" | "sentry" | "honeybadger" | "rollbar" | "bugsnag" | "appsignal"
        | "librato" | "raygun" | "skylight" | "cloudinary" | "algoliasearch" | "pusher" => (
            Equivalence::KeepVendor,
            "no AWS equivalent needed: keep the vendor, billed by them directly",
            "sign up with the vendor directly and move the add-on's config vars; its API works from AWS",
        ),
        _ => (
            Equivalence::None,
            "no AWS mapping known to Ferry",
            "decide by hand before cutover: keep the vendor or replace it",
        ),
    }
}

fn addon_mapping(a: &AddOnInfo, prices: &Prices) -> Mapping {
    let (equivalence, aws, note) = addon_target(&a.service);
    let mut notes = vec![note.to_string()];
    if !a.config_vars.is_empty() {
        notes.push(format!("sets {}", a.config_vars.join(", ")));
    }
    // A Heroku Key-Value Store (Redis) plan from the table, when this is one.
    let key_value = crate::sizing::is_key_value(a)
        .then(|| prices.heroku.key_value.get(&a.plan))
        .flatten();
    let heroku_monthly = a.billed_monthly.or(key_value.map(|p| p.monthly));
    let mut aws = aws.to_string();
    let aws_monthly = match a.service.as_str() {
        "heroku-redis" | "heroku-key-value-store" => match crate::sizing::cache_node(a, prices) {
            Some((name, n)) => {
                aws = format!("{aws}: {name}");
                Some(prices.month(n.hourly))
            }
            None => {
                notes.push(format!("plan {} is not in the price table", a.plan));
                None
            }
        },
        "scheduler" => Some(0.0),
        _ if equivalence == Equivalence::KeepVendor => {
            if heroku_monthly.is_some() {
                notes.push("priced as what Heroku bills for it today".into());
            }
            heroku_monthly
        }
        _ => None,
    };
    Mapping {
        category: "add-on".into(),
        heroku: format!("{} ({}:{})", a.name, a.service, a.plan),
        aws,
        equivalence,
        heroku_monthly,
        aws_monthly,
        notes,
    }
}

fn totals(mappings: &[Mapping]) -> Totals {
    let mut t = Totals {
        heroku_monthly: 0.0,
        aws_monthly: 0.0,
        heroku_not_priced: vec![],
        aws_not_priced: vec![],
    };
    for m in mappings {
        match m.heroku_monthly {
            Some(v) => t.heroku_monthly += v,
            None => t.heroku_not_priced.push(m.heroku.clone()),
        }
        match m.aws_monthly {
            Some(v) => t.aws_monthly += v,
            None => t.aws_not_priced.push(m.heroku.clone()),
        }
    }
    t
}

/// The process types the cutover scales to zero on Heroku (all that run but web and
/// release); a name the spec cannot hold is left to a person, with a warning.
fn scale_down(running: &BTreeSet<&str>, warnings: &mut Vec<Issue>) -> Vec<String> {
    let mut scale_down = Vec::new();
    for p in running {
        if *p == "release" || *p == "web" {
            continue;
        }
        if ferry_core::spec::is_process_type(p) {
            scale_down.push(p.to_string());
        } else {
            warnings.push(issue(
                "process_type_name",
                Some(p),
                format!("process type {p} cannot be named in cutover.scale_down"),
                "rename it in the Procfile (lowercase letters, digits, `_`) or scale it down by hand at cutover",
            ));
        }
    }
    scale_down
}

fn spec(
    inventory: &Inventory,
    running: &BTreeSet<&str>,
    options: &Options,
    warnings: &mut Vec<Issue>,
) -> (Value, Vec<FillIn>) {
    let app = &inventory.app.name;
    let mut fill = Vec::new();
    let mut placeholder = |path: String, what: &str| {
        fill.push(FillIn {
            path,
            what: what.to_string(),
        });
        Value::String(format!("{PLACEHOLDER}{what}"))
    };
    let month: String = options.today.chars().take(7).collect();
    let id: String = format!("{app}-{month}")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(80)
        .collect();
    let domain = inventory.domains.iter().find(|d| d.kind == "custom");
    let record_name = match domain {
        Some(d) => json!(d.hostname),
        None => placeholder(
            child("traffic", "record_name"),
            "the custom domain clients use (the app has none yet)",
        ),
    };
    let heroku_target = match domain.and_then(|d| d.cname.clone()) {
        Some(c) => json!(c),
        None => placeholder(
            child("traffic", "heroku_target"),
            "the DNS target Heroku gives for that domain (heroku domains)",
        ),
    };
    let hosted_zone = placeholder(
        child("traffic", "hosted_zone_id"),
        "the Route 53 hosted zone id serving the domain (Z…)",
    );
    let aws_target = placeholder(
        child("traffic", "aws_target"),
        "the DNS name of the AWS load balancer in front of the web service",
    );
    let health = placeholder(
        child(&child("traffic", "health"), "url"),
        "an https:// health URL served by the AWS side (and/or CloudWatch alarm_names)",
    );
    let topic = placeholder(
        child("approvals", "sns_topic_arn"),
        "the stack's TopicArn output (sam deploy prints it)",
    );
    let approver = placeholder(
        index(&child("approvals", "approvers"), 0),
        "who may approve: email, Slack member id or IAM ARN",
    );
    let capture = inventory
        .database
        .as_ref()
        .and_then(|d| d.preflight.capture)
        .map(|c| serde_json::to_value(c).unwrap_or(json!("auto")))
        .unwrap_or(json!("auto"));
    let parallelism = inventory.database.as_ref().map_or(4, |d| d.parallelism);
    let scale_down = scale_down(running, warnings);
    let spec = json!({
        "$schema": "./migration.schema.json",
        "migration_id": id,
        "heroku": {
            "app": app,
            "api_token_param": format!("/ferry/{app}/heroku-api-token"),
        },
        "source": { "database_url_param": format!("/ferry/{app}/source-database-url") },
        "target": {
            "rds_instance_id": app,
            "database_url_param": format!("/ferry/{app}/target-database-url"),
        },
        "replication": { "capture": capture, "parallelism": parallelism },
        "traffic": {
            "hosted_zone_id": hosted_zone,
            "record_name": record_name,
            "heroku_target": heroku_target,
            "aws_target": aws_target,
            "health": { "url": health },
        },
        "approvals": { "sns_topic_arn": topic, "approvers": [approver] },
        "config_vars": { "ssm_prefix": format!("/{app}/config/") },
        "endpoint": { "url_param": format!("/ferry/{app}/endpoint-url") },
        "cutover": {
            "maintenance_mode": true,
            "scale_down": scale_down,
            "endpoint": "proxy",
        },
    });
    let mut spec = spec;
    if let Some(redis) = redis_section(inventory, warnings) {
        spec["redis"] = redis;
    }
    (spec, fill)
}

/// With a Heroku Key-Value Store, the spec's `redis` section: Redis moves with the database
/// (through the endpoint's Redis proxy), and a warning says what to prepare.
fn redis_section(inventory: &Inventory, warnings: &mut Vec<Issue>) -> Option<Value> {
    let app = &inventory.app.name;
    let kv = inventory
        .addons
        .iter()
        .find(|a| crate::sizing::is_key_value(a))?;
    warnings.push(issue(
        "redis_moves",
        Some(&kv.name),
        format!(
            "{} ({}) moves to ElastiCache with the database: the redis section lists Sidekiq's queues by default and no disposable cache",
            kv.name,
            kv.config_vars.join(", ")
        ),
        "store the add-on's URL with ?ssl_cert_reqs=none in the redis source parameter, create ElastiCache (parameter group: maxmemory-policy noeviction, notify-keyspace-events KEA) and store its URL in the target parameter, run `heroku redis:keyspace-notifications` with -c KEA, list cache keys (e.g. cache:*) in disposable_patterns and other queue shapes in queue_patterns",
    ));
    Some(json!({
        "source_url_param": format!("/ferry/{app}/redis-source-url"),
        "target_url_param": format!("/ferry/{app}/redis-target-url"),
        "databases": [0],
        "disposable_patterns": [],
        "queue_patterns": ferry_core::spec::default_queue_patterns(),
    }))
}
