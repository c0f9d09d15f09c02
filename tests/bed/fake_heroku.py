#!/usr/bin/env python3
"""A fake Heroku Platform API for the test bed: the only fake in Ferry's tests, because nothing
local can stand in for Heroku. Same paths, headers and JSON shapes as the real API for what
Ferry uses, and the same refusals that shape the design:

- `PATCH /apps/{app}/config-vars` may not set or delete a var owned by an add-on attachment
  ("Cannot overwrite attachment values DATABASE_URL.");
- an add-on's last attachment cannot be removed ("Cannot destroy last attachment to billing app").

Test-only endpoints live under `/__bed/` (no auth): `POST /__bed/apps` creates an app with a
Postgres add-on attached as DATABASE, so each test gets its own app.
"""

import argparse
import json
import re
import time
import threading
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION_HEADER = "application/vnd.heroku+json; version=3"
LOCK = threading.Lock()
APPS = {}  # name -> app dict
ADDONS = {}  # id -> add-on dict
ATTACHMENTS = {}  # id -> attachment dict
RATE_LIMIT = {"remaining": 4500}


def now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_id():
    return str(uuid.uuid4())


class ApiError(Exception):
    def __init__(self, status, id_, message):
        super().__init__(message)
        self.status, self.id, self.message = status, id_, message


def app_or_404(name_or_id):
    for a in APPS.values():
        if name_or_id in (a["name"], a["id"]):
            return a
    raise ApiError(404, "not_found", "Couldn't find that app.")


def ref(obj):
    return {"id": obj["id"], "name": obj["name"]}


def app_json(a):
    return {k: a[k] for k in ("id", "name", "maintenance", "region", "stack", "web_url", "created_at",
                              "updated_at", "released_at", "build_stack", "owner", "team", "space",
                              "internal_routing", "acm", "archived_at", "git_url", "buildpack_provided_description",
                              "repo_size", "slug_size", "organization")}


def attachments_of(app):
    return [t for t in ATTACHMENTS.values() if t["app"]["id"] == app["id"]]


def attachment_vars(app):
    """Config vars that belong to attachments: NAME_URL -> value."""
    out = {}
    for t in attachments_of(app):
        addon = ADDONS[t["addon"]["id"]]
        out[f"{t['name']}_URL"] = addon["_url"]
    return out


def formation_json(app):
    return [dict(f, app=ref(app)) for f in app["_formation"]]


def addon_json(addon):
    return {k: v for k, v in addon.items() if not k.startswith("_")} | {
        "config_vars": [f"{t['name']}_URL" for t in ATTACHMENTS.values() if t["addon"]["id"] == addon["id"]]
    }


def create_app(body):
    name = body.get("name") or ""
    if not re.fullmatch(r"[a-z][a-z0-9-]{2,29}", name):
        raise ApiError(422, "invalid_params", "Name must start with a letter, end with a letter or digit and can only contain lowercase letters, digits, and dashes.")
    if any(a["name"] == name for a in APPS.values()):
        raise ApiError(422, "invalid_params", "Name is already taken")
    t = now()
    app = {
        "id": new_id(), "name": name, "maintenance": False,
        "region": {"id": new_id(), "name": body.get("region", "us")},
        "stack": {"id": new_id(), "name": "heroku-24"}, "build_stack": {"id": new_id(), "name": "heroku-24"},
        "web_url": f"https://{name}-1a2b3c4d5e6f.herokuapp.com/", "git_url": f"https://git.heroku.com/{name}.git",
        "created_at": t, "updated_at": t, "released_at": t, "owner": {"id": new_id(), "email": "owner@example.com"},
        "team": None, "space": None, "organization": None, "internal_routing": None, "acm": False,
        "archived_at": None, "buildpack_provided_description": "Ruby", "repo_size": None, "slug_size": 51200000,
        "_config": dict(body.get("config_vars", {})),
        "_formation": [
            {"id": new_id(), "type": p.get("type"), "quantity": p.get("quantity", 1), "size": p.get("size", "standard-1X"),
             "command": p.get("command", ""), "created_at": t, "updated_at": t}
            for p in body.get("formation", [{"type": "web", "quantity": 2, "command": "bundle exec puma -C config/puma.rb"},
                                             {"type": "worker", "quantity": 1, "command": "bundle exec sidekiq"}])
        ],
        "_domains": [],
        "_autoscaling": dict(body.get("autoscaling", {})),
        "_metrics_forbidden": bool(body.get("metrics_forbidden", False)),
    }
    APPS[app["id"]] = app
    app["_domains"].append({"id": new_id(), "hostname": f"{name}-1a2b3c4d5e6f.herokuapp.com", "kind": "heroku",
                            "cname": None, "status": "none", "acm_status": None, "created_at": t, "updated_at": t,
                            "app": ref(app), "sni_endpoint": None})
    for host in body.get("domains", []):
        app["_domains"].append({"id": new_id(), "hostname": host, "kind": "custom",
                                "cname": f"{host.replace('.', '-')}-8f3a.herokudns.com", "status": "succeeded",
                                "acm_status": "cert issued", "created_at": t, "updated_at": t, "app": ref(app),
                                "sni_endpoint": None})
    if body.get("database_url"):
        addon = {
            "id": new_id(), "name": f"postgresql-{name}-{len(ADDONS) + 1}",
            "addon_service": {"id": new_id(), "name": "heroku-postgresql"},
            "plan": {"id": new_id(), "name": body.get("postgres_plan", "heroku-postgresql:standard-0")},
            "app": ref(app), "state": "provisioned", "created_at": t, "updated_at": t,
            "billed_price": {"cents": body.get("postgres_cents", 5000), "contract": False, "unit": "month"},
            "provider_id": new_id(), "web_url": None, "actions": [], "billing_entity": ref(app),
            "_url": body["database_url"],
        }
        ADDONS[addon["id"]] = addon
        attach(app, addon, "DATABASE")
    for addon_spec in body.get("addons", []):
        addon = {
            "id": new_id(), "name": f"{addon_spec['service']}-{name}-{len(ADDONS) + 1}",
            "addon_service": {"id": new_id(), "name": addon_spec["service"]},
            "plan": {"id": new_id(), "name": addon_spec["plan"]},
            "app": ref(app), "state": "provisioned", "created_at": t, "updated_at": t,
            "billed_price": {"cents": addon_spec.get("cents", 0), "contract": False, "unit": "month"},
            "provider_id": new_id(), "web_url": None, "actions": [], "billing_entity": ref(app),
            "_url": addon_spec.get("url", ""),
        }
        ADDONS[addon["id"]] = addon
        if addon_spec.get("as"):
            attach(app, addon, addon_spec["as"])
    return app


def attach(app, addon, name):
    name = name.upper()
    if not re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
        raise ApiError(422, "invalid_params", "Name must be uppercase letters, digits and underscores.")
    if any(t["name"] == name for t in attachments_of(app)):
        raise ApiError(422, "invalid_params", f"Name {name} is already taken by another attachment. Use --confirm to overwrite.")
    if f"{name}_URL" in app["_config"]:
        raise ApiError(422, "invalid_params", f"Cannot attach as {name}: config var {name}_URL is already set on {app['name']}.")
    t = now()
    att = {"id": new_id(), "name": name, "addon": {"id": addon["id"], "name": addon["name"], "app": addon["app"]},
           "app": ref(app), "namespace": None, "created_at": t, "updated_at": t, "web_url": None,
           "log_input_url": None}
    ATTACHMENTS[att["id"]] = att
    return att


def handle(method, path, body):
    parts = [p for p in path.split("?")[0].split("/") if p]
    match (method, parts):
        case ("GET", ["apps", a]):
            return 200, app_json(app_or_404(a))
        case ("PATCH", ["apps", a]):
            app = app_or_404(a)
            if "maintenance" in body:
                if not isinstance(body["maintenance"], bool):
                    raise ApiError(422, "invalid_params", "Invalid maintenance value.")
                app["maintenance"] = body["maintenance"]
                app["updated_at"] = now()
            return 200, app_json(app)
        case ("GET", ["apps", a, "formation"]):
            return 200, formation_json(app_or_404(a))
        case ("PATCH", ["apps", a, "formation"]):
            app = app_or_404(a)
            updates = body.get("updates")
            if not isinstance(updates, list):
                raise ApiError(422, "invalid_params", "Invalid updates: expected an array.")
            for u in updates:
                scale(app, u.get("type"), u)
            return 200, formation_json(app)
        case ("PATCH", ["apps", a, "formation", ptype]):
            app = app_or_404(a)
            f = scale(app, ptype, body)
            return 200, dict(f, app=ref(app))
        case ("GET", ["apps", a, "formation", ptype, "monitors"]):
            # Heroku's Metrics API (api.metrics.heroku.com; served here on the same host): the
            # formation's monitors, a `scale` one when dyno autoscaling is on. It wants the
            # app's id, not its name.
            app = next((x for x in APPS.values() if x["id"] == a), None)
            if app is None:
                raise ApiError(404, "not_found", "Couldn't find that app.")
            if app["_metrics_forbidden"]:
                raise ApiError(403, "forbidden", "This token may not read the app's metrics.")
            auto = app["_autoscaling"].get(ptype)
            if not auto:
                return 200, []
            return 200, [{"id": new_id(), "action_type": "scale", "is_active": True, "name": "LATENCY",
                          "op": "GREATER_OR_EQUAL", "period": 1, "value": auto.get("p95_ms", 1000),
                          "min_quantity": auto["min"], "max_quantity": auto["max"],
                          "notification_channels": [], "notification_period": 1440}]
        case ("GET", ["apps", a, "config-vars"]):
            app = app_or_404(a)
            return 200, app["_config"] | attachment_vars(app)
        case ("PATCH", ["apps", a, "config-vars"]):
            app = app_or_404(a)
            if not isinstance(body, dict):
                raise ApiError(422, "invalid_params", "Invalid config vars.")
            owned = sorted(k for k in body if k in attachment_vars(app))
            if owned:
                raise ApiError(422, "invalid_params", f"Cannot overwrite attachment values {', '.join(owned)}.")
            for k, v in body.items():
                if v is None:
                    app["_config"].pop(k, None)
                else:
                    app["_config"][k] = str(v)
            app["updated_at"] = now()
            return 200, app["_config"] | attachment_vars(app)
        case ("GET", ["apps", a, "addons"]):
            app = app_or_404(a)
            return 200, [addon_json(x) for x in ADDONS.values() if x["app"]["id"] == app["id"]]
        case ("GET", ["apps", a, "addon-attachments"]):
            return 200, attachments_of(app_or_404(a))
        case ("POST", ["addon-attachments"]):
            app = app_or_404(body.get("app", ""))
            addon = next((x for x in ADDONS.values() if body.get("addon") in (x["id"], x["name"])), None)
            if addon is None:
                raise ApiError(404, "not_found", "Couldn't find that add-on.")
            return 201, attach(app, addon, body.get("name") or addon["addon_service"]["name"].upper().replace("-", "_"))
        case ("DELETE", ["addon-attachments", att_id]):
            att = ATTACHMENTS.get(att_id)
            if att is None:
                raise ApiError(404, "not_found", "Couldn't find that add-on attachment.")
            siblings = [t for t in ATTACHMENTS.values() if t["addon"]["id"] == att["addon"]["id"]]
            if len(siblings) == 1:
                raise ApiError(422, "invalid_params", "Cannot destroy last attachment to billing app")
            del ATTACHMENTS[att_id]
            return 200, att
        case ("GET", ["apps", a, "domains"]):
            return 200, app_or_404(a)["_domains"]
        case ("GET", ["apps", a, "dynos"]):
            app = app_or_404(a)
            running = [(f, i) for f in app["_formation"] for i in range(f["quantity"])]
            # Dynos scaled away whose processes have not exited yet (SIGTERM sent, 30 s before
            # SIGKILL): still listed, as running processes.
            t = time.monotonic()
            app["_exiting"] = [(f, i, until) for (f, i, until) in app.get("_exiting", []) if until > t]
            running += [(f, i) for (f, i, _) in app["_exiting"]]
            return 200, [
                {"id": new_id(), "name": f"{f['type']}.{i + 1}", "type": f["type"], "size": f["size"], "state": "up",
                 "command": f["command"], "app": ref(app), "created_at": f["created_at"], "updated_at": now()}
                for (f, i) in running
            ]
    raise ApiError(404, "not_found", "The requested API endpoint was not found. Are you using the right HTTP verb (i.e. `GET` vs. `POST`), and did you specify your intended version with the `Accept` header?")


def scale(app, ptype, u):
    f = next((f for f in app["_formation"] if f["type"] == ptype), None)
    if f is None:
        raise ApiError(404, "not_found", f"Couldn't find that process type ({ptype}).")
    if "quantity" in u:
        q = u["quantity"]
        if not isinstance(q, int) or q < 0:
            raise ApiError(422, "invalid_params", "Invalid quantity.")
        if app.get("_report_exit"):
            # The rehearsal runs these dynos' processes: they stay listed until it says they
            # exited (or Heroku's SIGKILL, 30 s after the SIGTERM).
            until = time.monotonic() + 30
            app.setdefault("_exiting", []).extend((dict(f), i, until) for i in range(q, f["quantity"]))
        f["quantity"] = q
    if u.get("size"):
        f["size"] = u["size"]
    f["updated_at"] = now()
    return f


PAGE_MAX = 200


def paginate(items, range_header):
    """Heroku's list ranges: sorted by id (or name), at most `max` (default and cap 200 here,
    as Heroku's default) per answer; 206 with Next-Range when more remain. A Range header of
    `<field> [ ]]<start>..[<end>][; max=<n>]` asks for a page (`]` = exclusive start)."""
    field, start, exclusive, size = "id", None, False, PAGE_MAX
    if range_header:
        m = re.fullmatch(r"\s*(id|name)\s*(\]?)([^.;]*)\.\.([^;]*)(?:;\s*max=(\d+))?\s*", range_header)
        if not m:
            raise ApiError(400, "bad_request", "Invalid Range header.")
        field, exclusive, start = m.group(1), m.group(2) == "]", m.group(3) or None
        if m.group(5):
            size = max(1, min(int(m.group(5)), 1000))
    key = (lambda x: str(x.get(field, "")))
    items = sorted(items, key=key)
    if start is not None:
        items = [x for x in items if (key(x) > start if exclusive else key(x) >= start)]
    page, rest = items[:size], items[size:]
    if not rest:
        return 200, page, None
    return 206, page, f"{field} ]{key(page[-1])}..; max={size}"


class Handler(BaseHTTPRequestHandler):
    token = ""
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # one line per request, no headers (they carry the token)
        print(f"{self.command} {self.path} -> {args[1] if len(args) > 1 else ''}", flush=True)

    def reply(self, status, obj, next_range=None):
        data = json.dumps(obj).encode()
        self.send_response(status)
        if next_range:
            self.send_header("Next-Range", next_range)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("RateLimit-Remaining", str(RATE_LIMIT["remaining"]))
        self.send_header("Request-Id", new_id())
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if not n:
            return {}
        return json.loads(self.rfile.read(n))

    def dispatch(self):
        try:
            body = self.body()
        except json.JSONDecodeError:
            return self.reply(400, {"id": "bad_request", "message": "Invalid JSON."})
        if self.path.startswith("/__bed/"):
            return self.bed(body)
        if VERSION_HEADER not in (self.headers.get("Accept") or ""):
            return self.reply(400, {"id": "bad_request", "message": "Please specify a version along with Heroku's API MIME type. For example, `Accept: application/vnd.heroku+json; version=3`."})
        if self.headers.get("Authorization") != f"Bearer {self.token}":
            return self.reply(401, {"id": "unauthorized", "message": "Invalid credentials provided."})
        with LOCK:
            if RATE_LIMIT["remaining"] <= 0:
                return self.reply(429, {"id": "rate_limit", "message": "Your account reached the API rate limit. Please wait a few minutes before making new requests"})
            RATE_LIMIT["remaining"] -= 1
            next_range = None
            try:
                status, obj = handle(self.command, self.path, body)
                if self.command == "GET" and isinstance(obj, list):
                    status, obj, next_range = paginate(obj, self.headers.get("Range"))
            except ApiError as e:
                status, obj = e.status, {"id": e.id, "message": e.message}
        self.reply(status, obj, next_range)

    def bed(self, body):
        with LOCK:
            try:
                if self.command == "GET" and self.path == "/__bed/health":
                    return self.reply(200, {"ok": True})
                if self.command == "POST" and self.path == "/__bed/apps":
                    return self.reply(201, app_json(create_app(body)))
                m = re.fullmatch(r"/__bed/apps/([^/]+)/database-url", self.path)
                if self.command == "POST" and m:
                    # As `pg:credentials:rotate` does: the attachment's URL changes.
                    app = app_or_404(m.group(1))
                    pg = next((x for x in ADDONS.values() if x["app"]["id"] == app["id"]
                               and x["addon_service"]["name"] == "heroku-postgresql"), None)
                    if pg is None:
                        raise ApiError(404, "not_found", "the app has no Heroku Postgres add-on")
                    pg["_url"] = body["url"]
                    return self.reply(200, {"ok": True})
                m = re.fullmatch(r"/__bed/apps/([^/]+)/running", self.path)
                if self.command == "GET" and m:
                    # The dynos the formation runs, for the rehearsal's model of Heroku's
                    # processes (they stop when scaled down); outside the API's rate limit.
                    app = app_or_404(m.group(1))
                    return self.reply(200, {"dynos": sum(f["quantity"] for f in app["_formation"])})
                m = re.fullmatch(r"/__bed/apps/([^/]+)/(processes|exited)", self.path)
                if self.command == "POST" and m:
                    # `processes`: the rehearsal runs the app's dyno processes and reports when
                    # those scaled away exited; `exited`: they have.
                    app = app_or_404(m.group(1))
                    if m.group(2) == "processes":
                        app["_report_exit"] = True
                    else:
                        app["_exiting"] = []
                    return self.reply(200, {"ok": True})
                if self.command == "POST" and self.path == "/__bed/rate-limit":
                    RATE_LIMIT["remaining"] = int(body.get("remaining", 4500))
                    return self.reply(200, RATE_LIMIT)
            except ApiError as e:
                return self.reply(e.status, {"id": e.id, "message": e.message})
        self.reply(404, {"id": "not_found", "message": "no such test-bed endpoint"})

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = dispatch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--token", required=True)
    args = ap.parse_args()
    Handler.token = args.token
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"fake Heroku API on 127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
