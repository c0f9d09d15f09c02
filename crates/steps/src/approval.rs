//! Approval gates. [`request`] runs as a `.waitForTaskToken` task: it stores the token,
//! publishes the prompt to SNS (with signed approve/reject links for email approvers) and to
//! Slack (buttons). [`callback`] is the function URL those links and buttons reach: it checks
//! the signature, refuses stale and replayed requests and approvers not on the spec's list,
//! records the decision once and resumes the execution.

use std::collections::BTreeMap;

pub use aws_lambda_events::event::lambda_function_urls::LambdaFunctionUrlRequest;
use chrono::Utc;
use ferry_core::{
    StepErrorName,
    approval::{self, Decision},
    cloud::{CloudError, Service},
    secret::Secret,
    signing::{self, LinkClaims},
    state::{ApprovalRequest, ApprovalStatus, DrainCheckState, Gate, Phase},
    traffic::Weights,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{Deps, StepError, StepResult, now};

/// Input of a gate.
#[derive(Debug, Clone, Deserialize)]
pub struct RequestInput {
    /// The migration.
    pub migration_id: String,
    /// The gate.
    pub gate: Gate,
    /// `$$.Task.Token`.
    pub task_token: ferry_core::secret::Secret,
}

/// Output of a gate's prompt (the execution then waits).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requested {
    /// The gate.
    pub gate: Gate,
    /// Where the prompt went (`sns`, `slack`).
    pub notified: Vec<String>,
}

fn gate_text(gate: Gate) -> (&'static str, &'static str) {
    match gate {
        Gate::ShiftTraffic => (
            "shift traffic",
            "Approve to start the canary (Route 53 weights move to AWS step by step, each behind the health gate). Reject to roll back.",
        ),
        Gate::Cutover => (
            "cut over the database",
            "Approve to freeze writes for about a second, drain the last changes and make RDS the primary (Heroku Postgres stays in sync for rollback). Reject to roll back.",
        ),
        Gate::Finish => (
            "finish the migration",
            "Approve to end the rollback window now and decommission the Heroku side. Reject to ROLL BACK to Heroku (no write made on AWS is lost). Without an answer the window ends on its own.",
        ),
    }
}

/// Stores the gate's token and sends the prompt.
pub async fn request(deps: &Deps, input: RequestInput) -> StepResult<Requested> {
    let id = &input.migration_id;
    crate::abort::check(deps, id).await?;
    let rec = match input.gate {
        Gate::ShiftTraffic => deps.enter(id, Phase::AwaitingTrafficApproval).await?,
        Gate::Cutover => deps.enter(id, Phase::AwaitingCutoverApproval).await?,
        Gate::Finish => deps.record(id).await?,
    };
    let spec = &rec.spec;
    deps.store
        .put_approval(&ApprovalRequest {
            migration_id: id.clone(),
            gate: input.gate,
            task_token: input.task_token.clone(),
            requested_at: now(),
            status: ApprovalStatus::Pending,
            decided_by: None,
            decided_at: None,
        })
        .await?;
    let prompt = Prompt::gather(deps, &rec, input.gate).await?;
    let (what, explain) = gate_text(input.gate);
    let (alarm, facts_line) = (&prompt.alarm, &prompt.facts_line);
    let mut message = format!(
        "{alarm}Ferry migration {id} of Heroku app {} asks you to {what}.\n\n{explain}\n\n{facts_line}\n",
        spec.heroku.app
    );
    message.push_str(&format!(
        "\nDecide from a terminal: ferry approve {id} --gate {} (or ferry reject), or with Slack's buttons. Email approvers receive their own approve and reject links in a message of their own.\n",
        input.gate
    ));
    let subject = format!("Ferry: approve to {what} for {}", spec.heroku.app);
    let mut notified = Vec::new();
    deps.notifier
        .publish(&spec.approvals.sns_topic_arn, &subject, &message)
        .await?;
    notified.push("sns".to_string());
    email_links(deps, spec, input.gate, &prompt, &subject).await?;
    if let Some(param) = &spec.approvals.slack_webhook_param {
        let webhook = deps.params.get(param).await?;
        let explain = format!("{alarm}{explain}");
        let text = SlackText {
            what,
            explain: &explain,
            facts_line,
        };
        post_slack(deps, &webhook, id, input.gate, &text, prompt.overriding).await?;
        notified.push("slack".to_string());
    }
    Ok(Requested {
        gate: input.gate,
        notified,
    })
}

/// What every prompt of a gate says besides the gate's own words: the facts of the moment,
/// and for the finish gate the exact comparison's alarm and whether finishing takes the
/// override.
struct Prompt {
    facts_line: String,
    alarm: String,
    overriding: bool,
}

impl Prompt {
    async fn gather(
        deps: &Deps,
        rec: &ferry_core::state::MigrationRecord,
        gate: Gate,
    ) -> StepResult<Self> {
        let spec = &rec.spec;
        let progress = deps.store.progress(&rec.migration_id).await?;
        let weights = deps.router.weights(&spec.traffic).await?;
        let mut facts_line = format!("Phase: {}.", rec.phase);
        if let Some(p) = &progress {
            facts_line.push_str(&format!(
                " Replication lag: {} s ({} change(s) waiting).",
                p.lag_seconds
                    .map_or("unknown".into(), |l| format!("{l:.1}")),
                p.lag_changes.unwrap_or(0)
            ));
        }
        if let Some(w) = weights {
            facts_line.push_str(&format!(
                " Traffic on AWS: {:.0}%.",
                Weights::aws_share_percent(w)
            ));
        }
        let mut prompt = Self {
            facts_line,
            alarm: String::new(),
            overriding: false,
        };
        if gate == Gate::Finish
            && let (_, Some(check)) =
                crate::replication::exact_check(deps, spec, progress.as_ref()).await?
        {
            prompt.facts_line.push_str(&format!(
                " Exact comparison of the cutover: {}.",
                check.summary(Utc::now())
            ));
            if check.state == DrainCheckState::Different {
                prompt.alarm = "ALARM: the exact comparison of the cutover found rows that differ between Heroku Postgres and RDS at the frozen position (tables and keys below). The reverse stream keeps Heroku Postgres in sync with every write made on AWS since, so rejecting (rolling back) loses nothing; look at these keys before you approve.\n\n".into();
            }
            if check.needs_override() {
                prompt.overriding = true;
                prompt.alarm.push_str("Finishing now takes an explicit override (`ferry approve --accept-differences`, or Slack's \"Finish despite differences\" button); a plain approve, and any email link, is refused.\n\n");
            }
        }
        Ok(prompt)
    }
}

/// Each email approver's links go in a message of their own (SNS message attribute
/// `ferry_approver`), which the topic delivers only to subscriptions whose filter policy names
/// that address: a link decides as its approver, so no one else may receive it.
async fn email_links(
    deps: &Deps,
    spec: &ferry_core::MigrationSpec,
    gate: Gate,
    prompt: &Prompt,
    subject: &str,
) -> StepResult<()> {
    let Some(base) = &deps.settings.approval_url else {
        return Ok(());
    };
    let id = &spec.migration_id;
    let (what, explain) = gate_text(gate);
    let expires = Utc::now().timestamp() + i64::from(spec.timing.approval_timeout_hours) * 3600;
    let secret = deps.params.get(&deps.settings.link_secret_param).await?;
    for approver in spec.approvals.approvers.iter().filter(|a| a.contains('@')) {
        let link = |approve| {
            let t = signing::sign_link(
                secret.as_bytes(),
                &LinkClaims {
                    migration_id: id.clone(),
                    gate,
                    approve,
                    approver: approver.clone(),
                    expires_at: expires,
                },
            );
            format!("{}/approve?t={t}", base.trim_end_matches('/'))
        };
        let own = format!(
            "{}Ferry migration {id} of Heroku app {} asks you, {approver}, to {what}.\n\n{explain}\n\n{}\n\nThese links decide as {approver} and were sent to you alone; do not forward them.\n  approve: {}\n  reject:  {}\n",
            prompt.alarm,
            spec.heroku.app,
            prompt.facts_line,
            link(true),
            link(false)
        );
        deps.notifier
            .publish_for(&spec.approvals.sns_topic_arn, subject, &own, approver)
            .await?;
    }
    Ok(())
}

/// The words of a gate's Slack prompt.
struct SlackText<'a> {
    what: &'a str,
    explain: &'a str,
    facts_line: &'a str,
}

/// Posts the prompt with Approve and Reject buttons, and, when finishing needs the override
/// (`overriding`), a third button that approves accepting the differences.
async fn post_slack(
    deps: &Deps,
    webhook: &Secret,
    id: &str,
    gate: Gate,
    text: &SlackText<'_>,
    overriding: bool,
) -> StepResult<()> {
    let SlackText {
        what,
        explain,
        facts_line,
    } = text;
    let value = |approve: bool, accept: bool| {
        json!({ "migration_id": id, "gate": gate, "approve": approve, "accept_differences": accept })
            .to_string()
    };
    let mut buttons = vec![
        json!({ "type": "button", "style": "primary", "action_id": "ferry_approve",
          "text": { "type": "plain_text", "text": "Approve" }, "value": value(true, false) }),
        json!({ "type": "button", "style": "danger", "action_id": "ferry_reject",
          "text": { "type": "plain_text", "text": "Reject" }, "value": value(false, false) }),
    ];
    if overriding {
        buttons.push(json!({ "type": "button", "action_id": "ferry_accept_differences",
          "text": { "type": "plain_text", "text": "Finish despite differences" },
          "value": value(true, true),
          "confirm": { "title": { "type": "plain_text", "text": "Finish with differences?" },
            "text": { "type": "plain_text", "text": "Heroku is decommissioned with the differences the exact comparison found." },
            "confirm": { "type": "plain_text", "text": "Finish" },
            "deny": { "type": "plain_text", "text": "Cancel" } } }));
    }
    let body = json!({
        "text": format!("Ferry {id}: approve to {what}?"),
        "blocks": [
            { "type": "section", "text": { "type": "mrkdwn",
              "text": format!("*Ferry {id}*: approve to *{what}*?\n{explain}\n{facts_line}") } },
            { "type": "actions", "elements": buttons }
        ]
    });
    let res = deps
        .http
        .post(webhook.expose())
        .json(&body)
        .send()
        .await
        .map_err(|e| CloudError::Unavailable {
            service: Service::Slack,
            // The webhook URL is a secret: reqwest errors carry it, so drop it.
            source: e.without_url().into(),
        })?;
    let status = res.status();
    if status.is_server_error() || status.as_u16() == 429 {
        return Err(CloudError::Unavailable {
            service: Service::Slack,
            source: format!("webhook answered {status}").into(),
        }
        .into());
    }
    if !status.is_success() {
        return Err(CloudError::Refused {
            service: Service::Slack,
            what: "incoming webhook".into(),
            reason: format!(
                "answered {status}: {}",
                res.text().await.unwrap_or_default().trim()
            ),
        }
        .into());
    }
    Ok(())
}

/// An HTTP response for the function URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpResponse {
    /// Status code.
    #[serde(rename = "statusCode")]
    pub status_code: u16,
    /// Headers.
    pub headers: BTreeMap<String, String>,
    /// Body.
    pub body: String,
}

impl HttpResponse {
    fn new(status_code: u16, content_type: &str, body: String) -> Self {
        Self {
            status_code,
            headers: BTreeMap::from([("content-type".to_string(), content_type.to_string())]),
            body,
        }
    }

    fn page(status_code: u16, title: &str, text: &str) -> Self {
        Self::new(
            status_code,
            "text/html; charset=utf-8",
            format!(
                "<!doctype html><html><head><meta charset=utf-8><title>Ferry: {}</title></head><body><h1>{}</h1><p>{}</p></body></html>",
                html(title),
                html(title),
                html(text)
            ),
        )
    }

    fn slack(status_code: u16, text: &str) -> Self {
        Self::new(
            status_code,
            "application/json",
            json!({ "response_type": "ephemeral", "replace_original": false, "text": text })
                .to_string(),
        )
    }
}

fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The parts of a function URL event the callback reads.
#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    /// `GET` or `POST`.
    pub method: String,
    /// The path.
    pub path: String,
    /// The query string, decoded.
    pub query: BTreeMap<String, String>,
    /// Headers, lower-case names.
    pub headers: BTreeMap<String, String>,
    /// The raw body.
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// Reads a Lambda function URL event (payload format 2.0).
    pub fn from_url_event(event: &LambdaFunctionUrlRequest) -> StepResult<Self> {
        let body = event.body.clone().unwrap_or_default();
        let body = if event.is_base64_encoded {
            aws_smithy_types::base64::decode(&body)
                .map_err(|_| StepError::Input("body is not valid base64".into()))?
        } else {
            body.into_bytes()
        };
        // Header names come lower-case; a value that is not visible ASCII is read lossily
        // (the signature and timestamp headers Ferry checks are ASCII).
        let headers = event
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        Ok(Self {
            method: event
                .request_context
                .http
                .method
                .as_deref()
                .unwrap_or_default()
                .to_ascii_uppercase(),
            path: event.raw_path.clone().unwrap_or_default(),
            query: form(
                event
                    .raw_query_string
                    .as_deref()
                    .unwrap_or_default()
                    .as_bytes(),
            ),
            headers,
            body,
        })
    }
}

/// Decodes `application/x-www-form-urlencoded`.
pub fn form(bytes: &[u8]) -> BTreeMap<String, String> {
    form_urlencoded::parse(bytes).into_owned().collect()
}

/// Handles a request to the approval function URL. Never fails: every refusal is an HTTP
/// answer that says why (and changes nothing).
pub async fn callback(deps: &Deps, req: HttpRequest) -> HttpResponse {
    let slack = req.path.ends_with("/slack");
    match route(deps, &req).await {
        Ok(r) => r,
        Err(e) => {
            let code = status_for(&e);
            tracing::warn!(error = %e, name = e.step_error_name(), status = code, "approval refused");
            // A refusal of the request says why; a failure on Ferry's side names only its
            // stable name: whoever sent the request (signed or not) learns no parameter or
            // setting name.
            let why = if code >= 500 {
                format!(
                    "Ferry could not handle this request ({}); the operators' logs say why",
                    e.step_error_name()
                )
            } else {
                e.to_string()
            };
            if slack {
                HttpResponse::slack(200, &format!("Ferry refused this: {why}"))
            } else {
                HttpResponse::page(code, "Not done", &why)
            }
        }
    }
}

fn status_for(e: &StepError) -> u16 {
    match e.step_error_name() {
        "Ferry.Blocked.BadSignature" => 401,
        "Ferry.Blocked.NotAllowed" => 403,
        "Ferry.Blocked.ApprovalNotPending"
        | "Ferry.Failed.TaskGone"
        | "Ferry.Blocked.Replayed"
        | "Ferry.Blocked.Differences" => 409,
        "Ferry.Failed.Input" => 400,
        n if n.starts_with("Ferry.Retryable.") => 503,
        _ => 500,
    }
}

/// GET of an email link: a confirmation page only (mail scanners open links; opening one
/// decides nothing).
async fn link_page(deps: &Deps, req: &HttpRequest, now_s: i64) -> StepResult<HttpResponse> {
    let token = req
        .query
        .get("t")
        .ok_or_else(|| StepError::Input("the link has no t parameter".into()))?;
    // Cheap checks first: a flood of junk spends no SSM or KMS call.
    signing::link_precheck(token, now_s)?;
    let secret = deps.params.get(&deps.settings.link_secret_param).await?;
    let claims = signing::verify_link(secret.as_bytes(), token, now_s)?;
    let verb = if claims.approve { "Approve" } else { "Reject" };
    let body = format!(
        "<!doctype html><html><head><meta charset=utf-8><title>Ferry</title></head><body><h1>{verb} gate {} of migration {}?</h1><p>As {}.</p><form method=post action=\"decide\"><input type=hidden name=t value=\"{}\"><button type=submit>{verb}</button></form></body></html>",
        html(claims.gate.as_str()),
        html(&claims.migration_id),
        html(&claims.approver),
        html(token)
    );
    Ok(HttpResponse::new(200, "text/html; charset=utf-8", body))
}

/// POST of an email link's confirmation form: decides as the link's approver, once.
async fn link_decide(deps: &Deps, req: &HttpRequest, now_s: i64) -> StepResult<HttpResponse> {
    let fields = form(&req.body);
    let token = fields
        .get("t")
        .ok_or_else(|| StepError::Input("the form has no t field".into()))?;
    signing::link_precheck(token, now_s)?;
    let secret = deps.params.get(&deps.settings.link_secret_param).await?;
    let claims = signing::verify_link(secret.as_bytes(), token, now_s)?;
    // Keyed on the canonical signature: the same link re-cased is a replay.
    let nonce = signing::link_nonce(token);
    let decision = Decision {
        migration_id: claims.migration_id,
        gate: claims.gate,
        approve: claims.approve,
        approver: claims.approver,
        // An email link never overrides a found difference.
        accept_differences: false,
    };
    decide_once(deps, &decision, &nonce).await?;
    let verb = if decision.approve {
        "approved"
    } else {
        "rejected"
    };
    Ok(HttpResponse::page(
        200,
        "Done",
        &format!(
            "Gate {} of migration {} {verb} by {}.",
            decision.gate, decision.migration_id, decision.approver
        ),
    ))
}

/// POST of a Slack button: decides as the Slack member, once per signed request.
async fn slack_decide(deps: &Deps, req: &HttpRequest, now_s: i64) -> StepResult<HttpResponse> {
    let param = deps
        .settings
        .slack_signing_secret_param
        .as_ref()
        .ok_or_else(|| {
            StepError::Config(
                "Slack is not set up: FERRY_SLACK_SIGNING_SECRET_PARAM is empty".into(),
            )
        })?;
    let header = |n: &str| req.headers.get(n).map(String::as_str).unwrap_or_default();
    signing::slack_precheck(
        header("x-slack-request-timestamp"),
        header("x-slack-signature"),
        now_s,
    )?;
    let secret = deps.params.get(param).await?;
    // The replay record is keyed on the signature as verified (canonical hex), so a
    // re-encoded copy of a used request is still a replay.
    let signature = signing::verify_slack(
        secret.as_bytes(),
        header("x-slack-request-timestamp"),
        &req.body,
        header("x-slack-signature"),
        now_s,
    )?;
    let fields = form(&req.body);
    let payload: Value = serde_json::from_str(
        fields
            .get("payload")
            .ok_or_else(|| StepError::Input("no payload field".into()))?,
    )
    .map_err(|e| StepError::Input(format!("payload is not JSON: {e}")))?;
    let user = payload["user"]["id"]
        .as_str()
        .ok_or_else(|| StepError::Input("payload has no user.id".into()))?;
    let value: Value = serde_json::from_str(
        payload["actions"][0]["value"]
            .as_str()
            .ok_or_else(|| StepError::Input("payload has no action value".into()))?,
    )
    .map_err(|e| StepError::Input(format!("action value is not JSON: {e}")))?;
    #[derive(Deserialize)]
    struct Action {
        migration_id: String,
        gate: Gate,
        approve: bool,
        #[serde(default)]
        accept_differences: bool,
    }
    let a: Action = serde_json::from_value(value)
        .map_err(|e| StepError::Input(format!("action value: {e}")))?;
    let decision = Decision {
        migration_id: a.migration_id,
        gate: a.gate,
        approve: a.approve,
        approver: user.to_string(),
        accept_differences: a.approve && a.accept_differences,
    };
    decide_once(deps, &decision, &signature).await?;
    let verb = if decision.approve {
        "approved"
    } else {
        "rejected"
    };
    Ok(HttpResponse::slack(
        200,
        &format!(
            "<@{user}> {verb} gate {} of migration {}.",
            decision.gate, decision.migration_id
        ),
    ))
}

async fn route(deps: &Deps, req: &HttpRequest) -> StepResult<HttpResponse> {
    let now_s = Utc::now().timestamp();
    match (req.method.as_str(), req.path.trim_end_matches('/')) {
        // Links are only shown a confirmation: mail scanners open links, and opening one must
        // never decide anything.
        ("GET", p) if p.ends_with("/approve") => link_page(deps, req, now_s).await,
        ("POST", p) if p.ends_with("/decide") => link_decide(deps, req, now_s).await,
        ("POST", p) if p.ends_with("/slack") => slack_decide(deps, req, now_s).await,
        _ => Ok(HttpResponse::page(
            404,
            "Not found",
            "Ferry's approval endpoint answers /approve, /decide and /slack.",
        )),
    }
}

/// Decides unless this exact signed request was used before (a replay).
async fn decide_once(deps: &Deps, decision: &Decision, nonce: &str) -> StepResult<()> {
    let key = format!("replay/{nonce}");
    if deps
        .store
        .fact(&decision.migration_id, &key)
        .await?
        .is_some()
    {
        return Err(StepError::Replayed);
    }
    let rec = deps.record(&decision.migration_id).await?;
    approval::decide(
        deps.store.as_ref(),
        deps.callbacks.as_ref(),
        &rec.spec.approvals.approvers,
        decision,
        now(),
    )
    .await?;
    deps.store
        .swap_fact(
            &decision.migration_id,
            &key,
            None,
            &json!({ "at": Utc::now().to_rfc3339(), "by": decision.approver }),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{HttpRequest, LambdaFunctionUrlRequest, form};

    fn event(v: serde_json::Value) -> LambdaFunctionUrlRequest {
        serde_json::from_value(v).expect("a function URL event")
    }

    #[test]
    fn function_url_events_are_read_with_their_encodings() {
        let event = event(serde_json::json!({
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": "/decide",
            "rawQueryString": "t=a%2Bb.c&x",
            "headers": {"X-Slack-Signature": "v0=ab", "content-type": "application/x-www-form-urlencoded"},
            "requestContext": {
                "accountId": "anonymous", "apiId": "abc", "domainName": "abc.lambda-url.us-east-1.on.aws",
                "http": {"method": "post", "path": "/decide", "protocol": "HTTP/1.1", "sourceIp": "192.0.2.1", "userAgent": "curl"},
                "requestId": "r-1", "time": "01/Dec/2026:17:00:00 +0000", "timeEpoch": 1_796_144_400_000i64
            },
            // "t=a+b%3Dc" in base64
            "body": "dD1hK2IlM0Rj",
            "isBase64Encoded": true
        }));
        let req = HttpRequest::from_url_event(&event).expect("event");
        assert_eq!(req.method, "POST");
        assert_eq!(req.query.get("t").map(String::as_str), Some("a+b.c"));
        assert_eq!(req.query.get("x").map(String::as_str), Some(""));
        assert_eq!(
            req.headers.get("x-slack-signature").map(String::as_str),
            Some("v0=ab")
        );
        assert_eq!(form(&req.body).get("t").map(String::as_str), Some("a b=c"));
        let mut bad = event.clone();
        bad.body = Some("%%%".into());
        assert!(HttpRequest::from_url_event(&bad).is_err());
        // What is not a function URL event is refused where the input is read.
        assert!(
            serde_json::from_value::<LambdaFunctionUrlRequest>(serde_json::json!({"body": "x"}))
                .is_err()
        );
    }
}

#[cfg(test)]
mod gates {
    //! A gate on in-memory services: the prompt, each email approver's own links, and a
    //! decision taken once.

    use ferry_core::{
        MigrationStore,
        memory::Resumed,
        state::{ApprovalStatus, Gate, Phase},
    };

    use super::*;
    use crate::memory::{World, spec_with};

    const TOKEN: &str = "cutover-task-token";

    async fn cutover_gate() -> World {
        let spec = spec_with(|v| {
            v["approvals"]["approvers"] =
                serde_json::json!(["ops-lead@acme.example", "sre@acme.example"]);
        });
        let mut w = World::at(spec, Phase::ShiftingTraffic).await;
        w.deps.settings.approval_url = Some("https://cb.acme.example/".into());
        w.params.set(
            &w.deps.settings.link_secret_param,
            "a-link-signing-key-of-32-bytes!!",
        );
        w
    }

    async fn ask(w: &World) -> Requested {
        request(
            &w.deps,
            RequestInput {
                migration_id: w.spec.migration_id.clone(),
                gate: Gate::Cutover,
                task_token: TOKEN.into(),
            },
        )
        .await
        .expect("request")
    }

    fn link(message: &str, verb: &str) -> String {
        let line = message
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{verb}:")))
            .unwrap_or_else(|| panic!("no {verb} link in {message}"));
        let url = line.split_whitespace().last().expect("url");
        url.split("t=").nth(1).expect("token").to_string()
    }

    fn post_decide(token: &str) -> HttpRequest {
        HttpRequest {
            method: "POST".into(),
            path: "/decide".into(),
            body: format!(
                "t={}",
                form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>()
            )
            .into_bytes(),
            ..HttpRequest::default()
        }
    }

    #[tokio::test]
    async fn each_email_approver_gets_links_of_their_own_and_the_topic_gets_none() {
        let w = cutover_gate().await;
        let out = ask(&w).await;
        assert_eq!(out.notified, ["sns"]);
        assert_eq!(w.phase().await, Phase::AwaitingCutoverApproval);
        let sent = w.notifier.published();
        let audiences: Vec<&str> = sent.iter().map(|p| p.audience.as_str()).collect();
        assert_eq!(
            audiences,
            ["all", "ops-lead@acme.example", "sre@acme.example"]
        );
        assert!(
            !sent[0].message.contains("t="),
            "no link goes to every subscriber"
        );
        for own in &sent[1..] {
            assert!(own.message.contains(&format!("asks you, {}", own.audience)));
            assert_ne!(link(&own.message, "approve"), link(&own.message, "reject"));
        }
        assert_ne!(
            link(&sent[1].message, "approve"),
            link(&sent[2].message, "approve"),
            "a link decides as its approver alone"
        );
    }

    #[tokio::test]
    async fn a_reject_link_decides_once_and_fails_the_waiting_task() {
        let w = cutover_gate().await;
        ask(&w).await;
        let sent = w.notifier.published();
        let reject = link(&sent[2].message, "reject");
        let done = callback(&w.deps, post_decide(&reject)).await;
        assert_eq!(done.status_code, 200, "{}", done.body);
        assert!(matches!(
            w.callbacks.resumed(TOKEN),
            Some(Resumed::Failed { error, .. }) if error == ferry_core::approval::REJECTED
        ));
        let stored = w
            .store
            .approval(&w.spec.migration_id, Gate::Cutover)
            .await
            .expect("read")
            .expect("approval");
        assert_eq!(stored.status, ApprovalStatus::Rejected);
        assert_eq!(stored.decided_by.as_deref(), Some("sre@acme.example"));

        let replay = callback(&w.deps, post_decide(&reject)).await;
        assert_eq!(replay.status_code, 409, "{}", replay.body);
        let late = callback(&w.deps, post_decide(&link(&sent[1].message, "approve"))).await;
        assert_eq!(late.status_code, 409, "decided already: {}", late.body);
        assert!(matches!(
            w.callbacks.resumed(TOKEN),
            Some(Resumed::Failed { .. })
        ));
    }
}
