//! A small client for the parts of the Heroku Platform API that Ferry uses: the app, its
//! formation, maintenance mode, config vars, add-ons and their attachments, and domains.
//!
//! Tokens never appear in errors or logs. `DATABASE_URL` belongs to an add-on attachment and
//! cannot be overwritten through config vars; [`HerokuError::is_attachment_var`] recognises
//! that refusal so callers can take the attach/detach route instead.

use std::{collections::BTreeMap, time::Duration};

use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

/// The public API's base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.heroku.com";

/// The Metrics API, where Heroku keeps dyno autoscaling (formation monitors).
pub const METRICS_BASE_URL: &str = "https://api.metrics.heroku.com";

/// Heroku's dyno autoscaling of a process type, as its scale monitor holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Autoscaling {
    /// The fewest dynos.
    pub min: u32,
    /// The most dynos.
    pub max: u32,
    /// The p95 response time (ms) Heroku scales to keep.
    pub p95_ms: Option<u32>,
}

/// One formation monitor of the Metrics API.
#[derive(Debug, Deserialize)]
struct Monitor {
    action_type: String,
    #[serde(default)]
    is_active: bool,
    #[serde(default)]
    min_quantity: Option<u32>,
    #[serde(default)]
    max_quantity: Option<u32>,
    #[serde(default)]
    value: Option<f64>,
}

impl Monitor {
    /// The autoscaling an active scale monitor sets.
    fn autoscaling(&self) -> Option<Autoscaling> {
        if self.action_type != "scale" || !self.is_active {
            return None;
        }
        let (min, max) = (self.min_quantity?, self.max_quantity?);
        Some(Autoscaling {
            min: min.min(max),
            max: max.max(min),
            p95_ms: self
                .value
                .filter(|v| v.is_finite() && *v > 0.0)
                .map(|v| v.round().min(f64::from(u32::MAX)) as u32),
        })
    }
}

/// Why a Platform API call failed.
#[derive(Debug, thiserror::Error)]
pub enum HerokuError {
    /// The token is missing, wrong or lacks access.
    #[error(
        "Heroku refused the API token ({status}): {message}; check the token parameter and its access to the app"
    )]
    Unauthorized {
        /// HTTP status.
        status: u16,
        /// Heroku's message.
        message: String,
    },
    /// No such app or resource.
    #[error("Heroku has no {what}: {message}")]
    NotFound {
        /// What was looked up.
        what: String,
        /// Heroku's message.
        message: String,
    },
    /// The hourly request budget is spent.
    #[error("Heroku API rate limit reached; retry later")]
    RateLimited,
    /// Heroku refused the request.
    #[error("Heroku refused {what} ({status} {id}): {message}")]
    Api {
        /// What was attempted.
        what: String,
        /// HTTP status.
        status: u16,
        /// Heroku's error id, e.g. `invalid_params`.
        id: String,
        /// Heroku's message.
        message: String,
    },
    /// The API could not be reached or answered something unreadable.
    #[error("Heroku API unreachable for {what}: {reason}")]
    Transport {
        /// What was attempted.
        what: String,
        /// Why.
        reason: String,
    },
}

impl HerokuError {
    /// Whether Heroku refused to set a config var because an add-on attachment owns it.
    pub fn is_attachment_var(&self) -> bool {
        matches!(self, HerokuError::Api { message, .. } if message.contains("attachment values"))
    }

    /// The stable Step Functions error name.
    pub fn step_error_name(&self) -> &'static str {
        match self {
            HerokuError::Unauthorized { .. } => "Ferry.Blocked.HerokuUnauthorized",
            HerokuError::NotFound { .. } => "Ferry.Blocked.HerokuNotFound",
            HerokuError::RateLimited => "Ferry.Retryable.HerokuRateLimited",
            HerokuError::Api { .. } => "Ferry.Failed.HerokuRefused",
            HerokuError::Transport { .. } => "Ferry.Retryable.HerokuUnreachable",
        }
    }
}

/// A reference to another resource, as Heroku nests them (`{"id", "name"}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedRef {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
}

/// An app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct App {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Whether maintenance mode is on.
    pub maintenance: bool,
    /// Its region.
    pub region: Option<NamedRef>,
    /// Its stack.
    pub stack: Option<NamedRef>,
    /// Its default web URL.
    pub web_url: Option<String>,
}

/// One process type of the formation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Formation {
    /// Its id.
    pub id: String,
    /// Process type (`web`, `worker`, …).
    #[serde(rename = "type")]
    pub process_type: String,
    /// Number of dynos.
    pub quantity: u32,
    /// Dyno size (`standard-1X`, …).
    pub size: String,
    /// The command it runs.
    pub command: String,
}

/// One dyno (a running process of the formation, or a one-off).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dyno {
    /// Its name (`web.1`).
    pub name: String,
    /// Process type.
    #[serde(rename = "type")]
    pub process_type: String,
    /// Its state as the dyno manager reports it.
    pub state: DynoState,
}

/// A dyno's state (the Platform API's `state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DynoState {
    /// Booting.
    Starting,
    /// Running.
    Up,
    /// Asleep (an eco dyno); wakes on a request.
    Idle,
    /// Stopped.
    Down,
    /// Exited with an error.
    Crashed,
    /// A state this client does not know: treated as one that may still run.
    #[serde(other)]
    Unknown,
}

impl Dyno {
    /// Whether its process may still run (and write): any state but `down` and `crashed`.
    pub fn may_run(&self) -> bool {
        !matches!(self.state, DynoState::Down | DynoState::Crashed)
    }
}

/// A change of one process type's scale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FormationUpdate {
    /// Process type.
    #[serde(rename = "type")]
    pub process_type: String,
    /// New number of dynos.
    pub quantity: u32,
    /// New size, or unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
}

/// An add-on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddOn {
    /// Its id.
    pub id: String,
    /// Its globally unique name.
    pub name: String,
    /// The service (`heroku-postgresql`, …).
    pub addon_service: NamedRef,
    /// The plan (`heroku-postgresql:standard-0`, …).
    pub plan: NamedRef,
    /// The app that owns (bills) it.
    pub app: NamedRef,
    /// The config vars it sets on the app.
    #[serde(default)]
    pub config_vars: Vec<String>,
    /// `provisioned`, `provisioning`, `deprovisioned`.
    pub state: String,
    /// What Heroku bills for it, if it says.
    #[serde(default)]
    pub billed_price: Option<BilledPrice>,
}

/// An add-on's price as Heroku bills it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BilledPrice {
    /// Price in US cents per `unit`.
    pub cents: i64,
    /// `month` (or `hour` for metered plans).
    pub unit: String,
    /// Whether a contract sets the price (then `cents` may not be what is paid).
    #[serde(default)]
    pub contract: bool,
}

/// An add-on attachment: gives an app access to an add-on under a name (`DATABASE` sets
/// `DATABASE_URL`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddOnAttachment {
    /// Its id.
    pub id: String,
    /// The attachment name; its config var is `<NAME>_URL`.
    pub name: String,
    /// The attached add-on.
    pub addon: NamedRef,
    /// The app it is attached to.
    pub app: NamedRef,
}

/// A domain of the app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Domain {
    /// Its id.
    pub id: String,
    /// The host name.
    pub hostname: String,
    /// `heroku` (the default) or `custom`.
    pub kind: String,
    /// The DNS target to CNAME to, for custom domains.
    pub cname: Option<String>,
    /// Provisioning status.
    pub status: Option<String>,
}

/// The Platform API client.
#[derive(Debug, Clone)]
pub struct HerokuClient {
    http: reqwest::Client,
    base: String,
    metrics: String,
    token: ferry_core::secret::Secret,
}

impl HerokuClient {
    /// A client for `base_url` (normally [`DEFAULT_BASE_URL`]) with a bearer token.
    pub fn new(
        base_url: &str,
        token: impl Into<ferry_core::secret::Secret>,
    ) -> Result<Self, HerokuError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HerokuError::Transport {
                what: "build HTTP client".into(),
                reason: e.to_string(),
            })?;
        let base = base_url.trim_end_matches('/').to_string();
        // Heroku's Metrics API is a host of its own; another base (a proxy, the test bed's
        // fake API) serves both.
        let metrics = if base == DEFAULT_BASE_URL {
            METRICS_BASE_URL.to_string()
        } else {
            base.clone()
        };
        Ok(Self {
            http,
            base,
            metrics,
            token: token.into(),
        })
    }

    /// Heroku's dyno autoscaling of `process_type` (only `web` on Performance and Private
    /// dynos has it), read from the Metrics API's formation monitors of app `app_id` (its id,
    /// as that API wants): `None` when it is off.
    pub async fn autoscaling(
        &self,
        app_id: &str,
        process_type: &str,
    ) -> Result<Option<Autoscaling>, HerokuError> {
        let what = "autoscaling (formation monitors)";
        let path = format!("/apps/{app_id}/formation/{process_type}/monitors");
        let (_, _, text) = self
            .send_to(&self.metrics, Method::GET, &path, None, what, None)
            .await?;
        let monitors: Vec<Monitor> = parse(&text, what)?;
        Ok(monitors.iter().find_map(Monitor::autoscaling))
    }

    /// The app.
    pub async fn app(&self, app: &str) -> Result<App, HerokuError> {
        self.call(Method::GET, &format!("/apps/{app}"), None, "app")
            .await
    }

    /// Turns maintenance mode on or off.
    pub async fn set_maintenance(&self, app: &str, on: bool) -> Result<App, HerokuError> {
        let body = serde_json::json!({ "maintenance": on });
        self.call(
            Method::PATCH,
            &format!("/apps/{app}"),
            Some(body),
            "maintenance mode",
        )
        .await
    }

    /// The formation (process types, sizes, counts).
    pub async fn formation(&self, app: &str) -> Result<Vec<Formation>, HerokuError> {
        self.list(&format!("/apps/{app}/formation"), "formation")
            .await
    }

    /// The app's dynos as the dyno manager lists them.
    pub async fn dynos(&self, app: &str) -> Result<Vec<Dyno>, HerokuError> {
        self.list(&format!("/apps/{app}/dynos"), "dynos").await
    }

    /// Scales several process types in one call.
    pub async fn scale(
        &self,
        app: &str,
        updates: &[FormationUpdate],
    ) -> Result<Vec<Formation>, HerokuError> {
        let body = serde_json::json!({ "updates": updates });
        self.call(
            Method::PATCH,
            &format!("/apps/{app}/formation"),
            Some(body),
            "formation update",
        )
        .await
    }

    /// All config vars (name → value). Values are secrets: never log them.
    pub async fn config_vars(&self, app: &str) -> Result<BTreeMap<String, String>, HerokuError> {
        self.call(
            Method::GET,
            &format!("/apps/{app}/config-vars"),
            None,
            "config vars",
        )
        .await
    }

    /// Sets (`Some`) or deletes (`None`) config vars; returns all vars afterwards.
    pub async fn update_config_vars(
        &self,
        app: &str,
        changes: &BTreeMap<String, Option<String>>,
    ) -> Result<BTreeMap<String, String>, HerokuError> {
        let body = serde_json::to_value(changes).map_err(|e| HerokuError::Transport {
            what: "config var update".into(),
            reason: e.to_string(),
        })?;
        self.call(
            Method::PATCH,
            &format!("/apps/{app}/config-vars"),
            Some(body),
            "config var update",
        )
        .await
    }

    /// The app's add-ons.
    pub async fn addons(&self, app: &str) -> Result<Vec<AddOn>, HerokuError> {
        self.list(&format!("/apps/{app}/addons"), "add-ons").await
    }

    /// The app's add-on attachments.
    pub async fn attachments(&self, app: &str) -> Result<Vec<AddOnAttachment>, HerokuError> {
        self.list(
            &format!("/apps/{app}/addon-attachments"),
            "add-on attachments",
        )
        .await
    }

    /// Attaches `addon` (id or name) to `app` under `name` (its var becomes `<NAME>_URL`).
    pub async fn attach(
        &self,
        app: &str,
        addon: &str,
        name: &str,
    ) -> Result<AddOnAttachment, HerokuError> {
        let body = serde_json::json!({ "app": app, "addon": addon, "name": name });
        self.call(
            Method::POST,
            "/addon-attachments",
            Some(body),
            "add-on attachment",
        )
        .await
    }

    /// Removes an attachment by id. Heroku refuses to remove an add-on's last attachment.
    pub async fn detach(&self, attachment_id: &str) -> Result<AddOnAttachment, HerokuError> {
        self.call(
            Method::DELETE,
            &format!("/addon-attachments/{attachment_id}"),
            None,
            "add-on detachment",
        )
        .await
    }

    /// The app's domains.
    pub async fn domains(&self, app: &str) -> Result<Vec<Domain>, HerokuError> {
        self.list(&format!("/apps/{app}/domains"), "domains").await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        what: &str,
    ) -> Result<T, HerokuError> {
        let (_, _, text) = self.send(method, path, body, what, None).await?;
        parse(&text, what)
    }

    /// A list endpoint, every page: Heroku answers at most 200 items (by default) with
    /// `206 Partial Content` and a `Next-Range` header to send as `Range` for the next page.
    async fn list<T: DeserializeOwned>(
        &self,
        path: &str,
        what: &str,
    ) -> Result<Vec<T>, HerokuError> {
        let mut out = Vec::new();
        let mut range: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let (status, next, text) = self
                .send(Method::GET, path, None, what, range.as_deref())
                .await?;
            out.extend(parse::<Vec<T>>(&text, what)?);
            match (status, next) {
                (StatusCode::PARTIAL_CONTENT, Some(next)) => range = Some(next),
                (StatusCode::PARTIAL_CONTENT, None) => {
                    return Err(HerokuError::Transport {
                        what: what.to_string(),
                        reason: "206 Partial Content without a Next-Range header".into(),
                    });
                }
                _ => return Ok(out),
            }
        }
        Err(HerokuError::Transport {
            what: what.to_string(),
            reason: format!("more than {MAX_PAGES} pages"),
        })
    }

    /// One request: the status, the `Next-Range` header and the body of a success; an error
    /// for anything else.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        what: &str,
        range: Option<&str>,
    ) -> Result<(StatusCode, Option<String>, String), HerokuError> {
        self.send_to(&self.base, method, path, body, what, range)
            .await
    }

    /// [`Self::send`] to another of Heroku's hosts (the Metrics API).
    async fn send_to(
        &self,
        base: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
        what: &str,
        range: Option<&str>,
    ) -> Result<(StatusCode, Option<String>, String), HerokuError> {
        let transport = |reason: String| HerokuError::Transport {
            what: what.to_string(),
            reason,
        };
        let mut req = self
            .http
            .request(method, format!("{base}{path}"))
            .header("Accept", "application/vnd.heroku+json; version=3")
            .bearer_auth(self.token.expose());
        if let Some(range) = range {
            req = req.header("Range", range);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.map_err(|e| transport(e.to_string()))?;
        let status = resp.status();
        let next = resp
            .headers()
            .get("Next-Range")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp.text().await.map_err(|e| transport(e.to_string()))?;
        if status.is_success() {
            return Ok((status, next, text));
        }
        let (id, message) = serde_json::from_str::<Value>(&text)
            .ok()
            .map(|v| {
                let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                (field("id"), field("message"))
            })
            .unwrap_or_default();
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => HerokuError::Unauthorized {
                status: status.as_u16(),
                message,
            },
            StatusCode::NOT_FOUND => HerokuError::NotFound {
                what: what.to_string(),
                message,
            },
            StatusCode::TOO_MANY_REQUESTS => HerokuError::RateLimited,
            _ => HerokuError::Api {
                what: what.to_string(),
                status: status.as_u16(),
                id,
                message,
            },
        })
    }
}

/// Pages read at most from one list (200 items each by default: 200,000 items).
const MAX_PAGES: usize = 1_000;

fn parse<T: DeserializeOwned>(text: &str, what: &str) -> Result<T, HerokuError> {
    serde_json::from_str(text).map_err(|e| HerokuError::Transport {
        what: what.to_string(),
        reason: format!("unreadable answer: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::HerokuClient;

    #[test]
    fn an_active_scale_monitor_is_autoscaling_and_others_are_not() {
        let read = |v: serde_json::Value| {
            serde_json::from_value::<super::Monitor>(v)
                .expect("monitor")
                .autoscaling()
        };
        assert_eq!(
            read(
                serde_json::json!({"action_type": "scale", "is_active": true, "min_quantity": 2, "max_quantity": 8, "value": 500.0})
            ),
            Some(super::Autoscaling {
                min: 2,
                max: 8,
                p95_ms: Some(500)
            })
        );
        assert_eq!(
            read(
                serde_json::json!({"action_type": "scale", "is_active": false, "min_quantity": 2, "max_quantity": 8})
            ),
            None,
            "switched off"
        );
        assert_eq!(
            read(
                serde_json::json!({"action_type": "notify", "is_active": true, "min_quantity": 2, "max_quantity": 8})
            ),
            None,
            "an alert, not scaling"
        );
        assert_eq!(
            read(
                serde_json::json!({"action_type": "scale", "is_active": true, "min_quantity": 9, "max_quantity": 3})
            ),
            Some(super::Autoscaling {
                min: 3,
                max: 9,
                p95_ms: None
            }),
            "bounds given backwards are put in order"
        );
    }

    #[test]
    fn the_client_never_prints_its_token() {
        let c = HerokuClient::new("https://api.heroku.com", "HRKU-Zk7secret").expect("client");
        let shown = format!("{c:?}");
        assert!(!shown.contains("Zk7secret"), "{shown}");
    }
}
