"""IAM enforcement in the emulator, for requests signed with a role session's credentials.

moto can authorise requests against a principal's policies, but it checks the action only
against the resource "*" for almost every service, so any least-privilege statement (one that
names its resource) denies, and it does not imply the permissions a call needs on other
resources (ECS RunTask needs iam:PassRole on the task definition's roles). This module replaces
moto's check for the bed:

- Requests signed with the bed's administrator key (`testing`: the test harness, the CLI as an
  operator) or the key moto's state machine interpreter signs its service integrations with
  (`ak`) are not checked.
- A request signed with any other key must belong to a role session made in the emulator's STS
  (see iam_roles.py); an unknown key is refused as InvalidClientTokenId, a wrong SigV4
  signature (over the request as it arrived) as SignatureDoesNotMatch.
- The action is authorised against the role's inline policies (Allow/Deny, Action/NotAction,
  Resource/NotResource, wildcards, actions case-insensitive) for the resource(s) the request
  names, derived below per API. An API not listed is refused, naming itself, so that a new call
  in Ferry's code is taught here instead of passing unchecked. A statement with a Condition is
  refused likewise: conditions are not evaluated.
- Not modelled: resource-based policies (KMS key policies, SNS topic policies, SQS), service
  control policies, permission boundaries, session policies, the KMS calls SSM makes for a
  SecureString, and what the Lambda and ECS services themselves do with their roles (log
  delivery, ENIs, image pulls).

Each distinct decision (principal, action, resource, allowed) is appended once to
$FERRY_BED_IAM_LOG as a JSON line, so a test can show which role made which call.
"""

import fnmatch
import functools
import hashlib
import hmac
import json
import os
import re
import threading
from urllib.parse import parse_qsl, quote, unquote, urlparse

from moto.core.exceptions import (
    InvalidClientTokenIdError,
    JsonRESTError,
    SignatureDoesNotMatchError,
    _RESTError,
)
from moto.sts.models import sts_backends

ADMIN_KEYS = {"testing", "ak"}
RAW_BODY = "ferry.bed.raw_body"
_log_lock = threading.Lock()


class Denied(Exception):
    def __init__(self, action, resource, why):
        super().__init__(f"{action} on {resource}: {why}")
        self.action, self.resource, self.why = action, resource, why


# --- The resource each API call names -----------------------------------------------------

def _json(resp):
    body = resp.body
    if isinstance(body, dict):  # moto's DynamoDB has parsed it already
        return body
    try:
        return json.loads(body or resp.raw_body or "{}")
    except (ValueError, TypeError):
        return {}


def _q(resp, name):
    v = resp.querystring.get(name)
    return v[0] if v else None


def _q_list(resp, prefix):
    out, i = [], 1
    while (v := _q(resp, f"{prefix}.{i}")) is not None:
        out.append(v)
        i += 1
    return out


def _dynamodb(ctx, action, resp):
    body = _json(resp)
    table = body.get("TableName")
    if not table:
        raise Denied(f"dynamodb:{action}", "?", "the bed derives DynamoDB resources from TableName only")
    arn = f"arn:aws:dynamodb:{ctx['region']}:{ctx['account']}:table/{table}"
    if body.get("IndexName"):
        arn += f"/index/{body['IndexName']}"
    return [(f"dynamodb:{action}", arn)]


def _ssm_arn(ctx, name):
    name = name if name.startswith("/") else "/" + name
    return f"arn:aws:ssm:{ctx['region']}:{ctx['account']}:parameter{name}"


def _ssm(ctx, action, resp):
    body = _json(resp)
    if action in ("GetParameter", "PutParameter", "DeleteParameter", "GetParameterHistory"):
        names = [body.get("Name", "")]
    elif action in ("GetParameters", "DeleteParameters"):
        names = body.get("Names", [])
    elif action == "GetParametersByPath":
        names = [body.get("Path", "/").rstrip("/") or "/"]
    else:
        return None
    return [(f"ssm:{action}", _ssm_arn(ctx, n)) for n in names]


def _sns(ctx, action, resp):
    if action == "Publish":
        arn = _q(resp, "TopicArn") or _q(resp, "TargetArn")
    elif action in ("ListSubscriptionsByTopic", "GetTopicAttributes"):
        arn = _q(resp, "TopicArn")
    elif action == "GetSubscriptionAttributes":
        arn = _q(resp, "SubscriptionArn")
    else:
        return None
    return [(f"sns:{action}", arn or "?")]


def _route53(ctx, action, resp):
    m = re.search(r"/hostedzone/([^/]+)", unquote(resp.path))
    if action in ("ChangeResourceRecordSets", "ListResourceRecordSets", "GetHostedZone") and m:
        return [(f"route53:{action}", f"arn:aws:route53:::hostedzone/{m.group(1)}")]
    return None


def _events(ctx, action, resp):
    body = _json(resp)
    name = body.get("Name") if action in ("PutRule", "DeleteRule", "DescribeRule") else body.get("Rule")
    if action not in ("PutRule", "DeleteRule", "DescribeRule", "PutTargets", "RemoveTargets") or not name:
        return None
    bus = body.get("EventBusName") or "default"
    path = name if bus == "default" else f"{bus}/{name}"
    return [(f"events:{action}", f"arn:aws:events:{ctx['region']}:{ctx['account']}:rule/{path}")]


def _ecs_task_definition(ctx, ref):
    """The ARN of a task definition named by family, family:revision or ARN; the roles it runs
    with (RunTask passes them)."""
    from moto.ecs.models import ecs_backends

    backend = ecs_backends[ctx["account"]][ctx["region"]]
    name = ref.split("task-definition/", 1)[-1]
    family, _, rev = name.partition(":")
    revisions = backend.task_definitions.get(family, {})
    if not revisions:
        return f"arn:aws:ecs:{ctx['region']}:{ctx['account']}:task-definition/{name}", []
    td = revisions[int(rev)] if rev else revisions[max(revisions)]
    roles = [r for r in (getattr(td, "task_role_arn", None), getattr(td, "execution_role_arn", None)) if r]
    return td.arn, roles


def _ecs(ctx, action, resp):
    body = _json(resp)
    region, account = ctx["region"], ctx["account"]
    cluster = (body.get("cluster") or "default").split("/")[-1]
    if action == "RunTask":
        arn, roles = _ecs_task_definition(ctx, body.get("taskDefinition", ""))
        over = body.get("overrides") or {}
        roles += [r for r in (over.get("taskRoleArn"), over.get("executionRoleArn")) if r]
        return [("ecs:RunTask", arn)] + [("iam:PassRole", r) for r in roles]
    if action in ("DescribeTasks", "StopTask"):
        tasks = body.get("tasks") or [body.get("task", "")]
        return [(f"ecs:{action}", t if t.startswith("arn:")
                 else f"arn:aws:ecs:{region}:{account}:task/{cluster}/{t}") for t in tasks]
    if action in ("UpdateService", "DescribeServices"):
        services = body.get("services") or [body.get("service", "")]
        return [(f"ecs:{action}", s if s.startswith("arn:")
                 else f"arn:aws:ecs:{region}:{account}:service/{cluster}/{s}") for s in services]
    return None


def _rds(ctx, action, resp):
    base = f"arn:aws:rds:{ctx['region']}:{ctx['account']}"
    if action == "DescribeDBInstances":
        return [("rds:DescribeDBInstances", f"{base}:db:{_q(resp, 'DBInstanceIdentifier') or '*'}")]
    if action == "DescribeDBParameters":
        return [("rds:DescribeDBParameters", f"{base}:pg:{_q(resp, 'DBParameterGroupName') or '?'}")]
    return None


def _cloudwatch(ctx, action, resp):
    if action != "DescribeAlarms":
        return None
    names = _q_list(resp, "AlarmNames.member")
    base = f"arn:aws:cloudwatch:{ctx['region']}:{ctx['account']}:alarm:"
    return [("cloudwatch:DescribeAlarms", base + n) for n in names] or [("cloudwatch:DescribeAlarms", "*")]


def _states(ctx, action, resp):
    body = _json(resp)
    # Task tokens carry the authority: these actions take no resource-level permission in
    # IAM, so a policy must grant them on "*".
    if action in ("SendTaskSuccess", "SendTaskFailure", "SendTaskHeartbeat"):
        return [(f"states:{action}", "*")]
    if action == "StartExecution":
        return [("states:StartExecution", body.get("stateMachineArn", "?"))]
    if action in ("DescribeExecution", "GetExecutionHistory", "StopExecution"):
        return [(f"states:{action}", body.get("executionArn", "?"))]
    return None


def _secretsmanager(ctx, action, resp):
    if action != "GetSecretValue":
        return None
    secret = _json(resp).get("SecretId", "?")
    if not secret.startswith("arn:"):
        # A name: IAM judges the secret's full ARN (its name and a random suffix).
        from moto.secretsmanager.models import secretsmanager_backends
        try:
            secret = secretsmanager_backends[ctx["account"]][ctx["region"]].describe_secret(secret).arn
        except Exception:
            secret = f"arn:aws:secretsmanager:{ctx['region']}:{ctx['account']}:secret:{secret}"
    return [("secretsmanager:GetSecretValue", secret)]


DERIVE = {
    "dynamodb": _dynamodb, "ssm": _ssm, "sns": _sns, "route53": _route53, "events": _events,
    "ecs": _ecs, "rds": _rds, "monitoring": _cloudwatch, "states": _states,
    "secretsmanager": _secretsmanager,
}


# --- Policy evaluation ---------------------------------------------------------------------

def _listify(v):
    return v if isinstance(v, list) else [v]


def _matches(patterns, value, case_insensitive=False):
    for p in _listify(patterns):
        if case_insensitive:
            p, v = p.lower(), value.lower()
        else:
            v = value
        if fnmatch.fnmatchcase(v, p.replace("[", "[[]")):
            return True
    return False


def _applies(st, action, resource):
    if "Condition" in st:
        raise Denied(action, resource, "a statement has a Condition, which the bed does not evaluate")
    if "Action" in st:
        if not _matches(st["Action"], action, case_insensitive=True):
            return False
    elif _matches(st.get("NotAction", []), action, case_insensitive=True):
        return False
    if "Resource" in st:
        return _matches(st["Resource"], resource)
    return not _matches(st.get("NotResource", []), resource)


def allowed(documents, action, resource):
    """IAM's evaluation within one principal's identity policies: an explicit Deny wins, then
    any Allow, otherwise the implicit deny."""
    allow = False
    for doc in documents:
        for st in _listify(doc.get("Statement", [])):
            if _applies(st, action, resource):
                if st.get("Effect") == "Deny":
                    return False
                allow = allow or st.get("Effect") == "Allow"
    return allow


# --- The hook ------------------------------------------------------------------------------

def _session(account, key):
    for partition in ("aws",):
        for s in sts_backends[account][partition].assumed_roles:
            if s.access_key_id == key:
                return s
    return None


_documents = {}
_logged = set()


def _role_documents(account, role_name):
    """The role's inline policies, read once: the bed makes its roles before anything runs."""
    key = (account, role_name)
    if key not in _documents:
        from moto.iam.models import iam_backends

        iam = iam_backends[account]["aws"]
        docs = []
        for name in iam.list_role_policies(role_name):
            _, doc = iam.get_role_policy(role_name, name)
            docs.append(json.loads(doc) if isinstance(doc, str) else doc)
        _documents[key] = docs
    return _documents[key]


def _record(entry):
    """Appends a decision, once per (principal, action, resource, outcome): the log says who
    did what, not how often (an endpoint task polls its table many times a second)."""
    path = os.environ.get("FERRY_BED_IAM_LOG")
    key = (entry["principal"], entry["action"], entry["resource"], entry["allowed"])
    if not path or key in _logged:
        return
    with _log_lock:
        if key in _logged:
            return
        _logged.add(key)
        with open(path, "a") as f:
            f.write(json.dumps(entry) + "\n")


def _is_json_protocol(resp):
    return bool(resp.headers.get("X-Amz-Target")) or "json" in (resp.headers.get("Content-Type") or "")


def authorize(resp, iam_request_cls, resource="*"):
    auth = resp.headers.get("Authorization") or ""
    key = auth.partition("Credential=")[2].partition("/")[0]
    if not auth or key in ADMIN_KEYS:
        return
    account = resp.current_account
    session = _session(account, key)
    if session is None:
        raise InvalidClientTokenIdError()
    role = session.role_arn.split("/")[-1]
    principal = f"arn:aws:sts::{account}:assumed-role/{role}/{session.session_name}"
    scope = auth.partition("Credential=")[2].split("/")
    service = scope[3] if len(scope) > 3 else "?"
    action = resp._get_action()
    if not signature_matches(resp, session.secret_access_key, auth):
        _record({"principal": principal, "action": f"{service}:{action}", "resource": "?",
                 "allowed": False, "why": "the request's signature does not match"})
        raise SignatureDoesNotMatchError()
    ctx = {"region": scope[2] if len(scope) > 2 else "us-east-1", "account": account}
    try:
        derive = DERIVE.get(service)
        checks = derive(ctx, action, resp) if derive else None
        if checks is None:
            raise Denied(f"{service}:{action}", "?",
                         "the bed does not know which resource this API names; teach tests/bed/iam_enforce.py")
        docs = _role_documents(account, role)
        for act, res in checks:
            if not allowed(docs, act, res):
                raise Denied(act, res, "no statement of the role allows it")
            _record({"principal": principal, "action": act, "resource": res, "allowed": True})
    except Exception as e:
        d = e if isinstance(e, Denied) else Denied(f"{service}:{action}", "?", f"the bed failed to judge it: {e!r}")
        _record({"principal": principal, "action": d.action, "resource": d.resource,
                 "allowed": False, "why": d.why})
        msg = (f"User: {principal} is not authorized to perform: {d.action} on resource: "
               f"{d.resource} ({d.why})")
        if _is_json_protocol(resp):
            err = JsonRESTError("AccessDeniedException", msg)
        else:
            err = _RESTError("AccessDenied", msg)
        err.code = 400 if _is_json_protocol(resp) else 403
        raise err


@functools.lru_cache(maxsize=256)
def _signing_key(secret, date, region, service):
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def signature_matches(resp, secret, auth):
    """SigV4 over the request as it arrived (method, path, query, the signed headers, the body
    as sent). moto's own check signs a body rebuilt from the parsed parameters, which differs
    from what the SDK signed for every GET with a query string, and costs twice as much."""
    fields = dict(p.strip().split("=", 1) for p in auth.split(" ", 1)[1].split(","))
    scope = fields["Credential"].split("/", 1)[1]
    date, region, service, _ = scope.split("/")
    signed = fields["SignedHeaders"]
    query = urlparse(resp.uri).query
    pairs = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~"))
                   for k, v in parse_qsl(query, keep_blank_values=True))
    headers = "".join(f"{name}:{' '.join((resp.headers.get(name) or '').split())}\n"
                      for name in signed.split(";"))
    raw = getattr(resp.headers, "environ", {}).get(RAW_BODY, b"")
    payload = resp.headers.get("X-Amz-Content-Sha256") or hashlib.sha256(raw).hexdigest()
    canonical = "\n".join([resp.method, quote(resp.raw_path, safe="/~"),
                           "&".join(f"{k}={v}" for k, v in pairs), headers, signed, payload])
    to_sign = "\n".join(["AWS4-HMAC-SHA256", resp.headers.get("X-Amz-Date") or "", scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    expected = hmac.new(_signing_key(secret, date, region, service), to_sign.encode(),
                        hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields.get("Signature", ""))


def keep_raw_bodies():
    """Keeps every request's body as sent, before Flask parses a form out of it."""
    import io

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    inner = DomainDispatcherApplication.__call__

    def call(self, environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length > 0 else b""
        environ["wsgi.input"] = io.BytesIO(raw)
        environ[RAW_BODY] = raw
        return inner(self, environ, start_response)

    DomainDispatcherApplication.__call__ = call


def install():
    keep_raw_bodies()
    from moto.core.authorization import ActionAuthenticatorMixin

    def hook(self, iam_request_cls, resource="*"):
        authorize(self, iam_request_cls, resource)

    ActionAuthenticatorMixin._authenticate_and_authorize_action = hook
