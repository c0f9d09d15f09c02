"""What AWS refuses and the emulator forgives: the bed refuses it too.

moto models the happy path of each API. A real account refuses more, and code that relies on
the emulator's leniency fails on its first real migration. Each rule below is a few lines over
moto, installed once when the emulator starts (moto_server.py), and each names the AWS
documentation it follows. ARCHITECTURE.md lists them under "What the bed enforces".

Route 53 (ChangeResourceRecordSets), Developer Guide "Values that you specify when you create
or edit Amazon Route 53 records" and "Choosing between alias and non-alias records":
- a batch is applied whole or not at all;
- CREATE of a record set that exists, or DELETE of one that does not exist or whose values
  (TTL, weight, records) differ from the stored ones, is refused;
- a weighted (SetIdentifier) record set may not sit beside a simple one of the same name and
  type ("conflicting RRSet"), and weighted sets of one name and type must all be weighted;
- a CNAME may not sit at the zone apex, nor beside any other record type of the same name.

Step Functions, Developer Guide "Step Functions service quotas": an execution's history holds
at most 25,000 events; the event past that fails the execution with `States.Runtime`, which no
`Catch` sees (`States.ALL` does not match it). The bed's limit is
$FERRY_BED_SFN_HISTORY_LIMIT (25,000 by default), or the state machine's tag
`ferry-bed:history-limit`, so a test reaches it in seconds on a machine of its own. A state's
input or output over 256 KiB fails the execution with `States.DataLimitExceeded`, likewise
beyond any Catch ("Step Functions service quotas": maximum input or output size for a task,
state or execution).

Lambda (Developer Guide "Configure Lambda function timeout": "Lambda runs your code for a set
amount of time before timing out ... the maximum allowed value is 900 seconds"): an invocation
that runs past its function's Timeout (from infra/template.yaml: the Globals' 900 s or the
function's own) ends with `Sandbox.Timedout`, "Task timed out after N seconds", which Step
Functions reports as the task's error. A state machine tagged `ferry-bed:lambda-timeout` (seconds)
lowers every function's timeout for its executions (`ferry-bed:lambda-timeout:<binary>` one
function's), so a test reaches it in seconds. The bed
answers the timeout; the function's process, which AWS would freeze, runs on in cargo lambda
watch until it returns.

CloudWatch (API Reference, DescribeAlarms, AlarmTypes: "If you omit this parameter, only
metric alarms are returned, even if composite alarms exist that match"): composite alarms are
listed only when AlarmTypes names them.
"""

import copy
import json
import os
import threading

from moto.route53.exceptions import Route53ClientError


class ChangeRefused(Route53ClientError):
    def __init__(self, message):
        super().__init__("InvalidChangeBatch", f"[{message}]")


def _fqdn(name):
    name = (name or "").lower()
    return name if name.endswith(".") else name + "."


def _values(rs):
    """A record set's records as a sorted list of strings, from either form moto holds."""
    out = []
    for r in rs.get("ResourceRecords") or []:
        out.append(r["Value"] if isinstance(r, dict) else r)
    return sorted(out)


def _key(rs):
    return (_fqdn(rs.get("Name")), rs.get("Type"), rs.get("SetIdentifier"))


def _same(stored, given):
    """DELETE must name the record set exactly as stored (AWS: "the values provided do not
    match the current values")."""
    def norm(rs):
        ttl = rs.get("TTL")
        weight = rs.get("Weight")
        return (
            None if ttl is None else int(ttl),
            None if weight is None else int(weight),
            _values(rs),
            rs.get("AliasTarget") and _fqdn(rs["AliasTarget"].get("DNSName")),
        )
    return norm(stored) == norm(given)


def _stored(zone):
    """The zone's record sets as change-batch dicts, keyed like a change."""
    out = {}
    for r in zone.rrsets:
        rs = {"Name": r.name, "Type": r.type, "TTL": r.ttl, "SetIdentifier": r.set_identifier,
              "Weight": r.weight, "ResourceRecords": list(r.records or []),
              "AliasTarget": r.alias_target}
        out[_key(rs)] = rs
    return out


def simulate(zone_name, current, changes):
    """Applies `changes` to a copy of `current` ({key: record set}), raising ChangeRefused at
    the first rule a real Route 53 would refuse the batch for. Returns the resulting state."""
    state = copy.deepcopy(current)
    for change in changes:
        action, rs = change["Action"], change["ResourceRecordSet"]
        key = _key(rs)
        label = f"name='{key[0]}', type='{key[1]}', set-identifier='{key[2]}'"
        if action == "CREATE":
            if key in state:
                raise ChangeRefused(f"Tried to create resource record set [{label}] but it already exists")
            state[key] = rs
        elif action == "UPSERT":
            state[key] = rs
        elif action == "DELETE":
            if key not in state:
                raise ChangeRefused(f"Tried to delete resource record set [{label}] but it was not found")
            if not _same(state[key], rs):
                raise ChangeRefused(f"Tried to delete resource record set [{label}] but the values "
                                    "provided do not match the current values")
            del state[key]
    check_state(_fqdn(zone_name), state)
    return state


def check_state(zone_name, state):
    by_name = {}
    for (name, rtype, set_id) in state:
        by_name.setdefault(name, {}).setdefault(rtype, []).append(set_id)
    for name, types in by_name.items():
        if "CNAME" in types and name == zone_name:
            raise ChangeRefused(f"RRSet of type CNAME with DNS name {name} is not permitted at "
                                f"apex in zone {zone_name}")
        if "CNAME" in types and len(types) > 1:
            other = sorted(t for t in types if t != "CNAME")[0]
            raise ChangeRefused(f"RRSet of type CNAME with DNS name {name} is not permitted "
                                f"because a conflicting RRSet of type {other} with the same "
                                "DNS name already exists in zone " + zone_name)
        for rtype, ids in types.items():
            if None in ids and len(ids) > 1:
                raise ChangeRefused(f"RRSet with DNS name {name}, type {rtype} cannot be created "
                                    "as a non-weighted set exists with the same name and type")


def install_route53():
    from moto.route53.models import Route53Backend

    original = Route53Backend.change_resource_record_sets

    def change_resource_record_sets(self, zoneid, change_list):
        zone = self.get_hosted_zone(zoneid)
        simulate(zone.name, _stored(zone), change_list)
        # Valid as a whole: apply in order. moto deletes a weighted set by its identifier
        # alone (whatever its name): delete exactly the key instead.
        for change in change_list:
            if change["Action"] == "DELETE":
                key = _key(change["ResourceRecordSet"])
                zone.rrsets = [r for r in zone.rrsets
                               if (_fqdn(r.name), r.type, r.set_identifier) != key]
                zone.rr_changes.append(copy.deepcopy(change))
            else:
                original(self, zoneid, [change])

    Route53Backend.change_resource_record_sets = change_resource_record_sets


class HistoryLimitExceeded(BaseException):
    """Raised past the limit. A BaseException, so no state's error handling (Retry, Catch,
    States.ALL) can take it: only the program's top level, which fails the execution."""

    error = "States.Runtime"


class DataLimitExceeded(HistoryLimitExceeded):
    """A state's input or output past 256 KiB: terminal as well."""

    error = "States.DataLimitExceeded"


PAYLOAD_LIMIT = 256 * 1024


def _payload_too_large(details):
    """The first input or output of an event's details larger than the payload limit."""
    for body in (details or {}).values():
        if isinstance(body, dict):
            for key in ("input", "output"):
                value = body.get(key)
                if isinstance(value, str) and len(value.encode()) > PAYLOAD_LIMIT:
                    return key, len(value.encode())
    return None


HISTORY_TAG = "ferry-bed:history-limit"


LAMBDA_TIMEOUT_TAG = "ferry-bed:lambda-timeout"
LAMBDA_TIMEOUT_HEADER = "x-ferry-bed-lambda-timeout"


def _tags(account, region, state_machine_arn):
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends
    try:
        tags = stepfunctions_parser_backends[account][region].list_tags_for_resource(state_machine_arn)
    except Exception:  # noqa: BLE001 - no tags readable: the defaults stand
        return {}
    out = {}
    for tag in next(iter(tags.values()), []) if isinstance(tags, dict) else []:
        out[tag.get("key", tag.get("Key"))] = tag.get("value", tag.get("Value"))
    return out


def lambda_timeouts(tags):
    """The lowered timeouts a state machine's tags ask for: `ferry-bed:lambda-timeout` for every
    function ("*"), `ferry-bed:lambda-timeout:<binary>` for one."""
    out = {}
    for key, value in tags.items():
        if key == LAMBDA_TIMEOUT_TAG:
            out["*"] = int(value)
        elif key.startswith(LAMBDA_TIMEOUT_TAG + ":"):
            out[key.split(":", 2)[2]] = int(value)
    return out or None


def _history_limit(tags):
    limit = int(os.environ.get("FERRY_BED_SFN_HISTORY_LIMIT") or 25000)
    if HISTORY_TAG in tags:
        limit = int(tags[HISTORY_TAG])
    return limit


def install_stepfunctions():
    from moto.stepfunctions.parser.api import (
        ExecutionFailedEventDetails,
        HistoryEventType,
    )
    from moto.stepfunctions.parser.asl.component.program.program import Program
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
    from moto.stepfunctions.parser.asl.eval.event.event_manager import EventManager
    from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

    make_env = ExecutionWorker._get_evaluation_environment

    def get_env(self):
        env = make_env(self)
        arn = self._evaluation_details.state_machine_details.arn
        parts = arn.split(":")
        tags = _tags(parts[4], parts[3], arn)
        env.event_manager.ferry_limit = _history_limit(tags)
        env.event_manager.ferry_lambda_timeout = lambda_timeouts(tags)
        return env

    ExecutionWorker._get_evaluation_environment = get_env

    add_event = EventManager.add_event

    def limited_add_event(self, context, event_type, *args, **kwargs):
        limit = getattr(self, "ferry_limit", None)
        if limit is not None and not getattr(self, "ferry_over", False):
            if len(self._history_event_list) >= limit:
                self.ferry_over = True
                raise HistoryLimitExceeded(
                    f"The execution reached the maximum number of history events ({limit}).")
            details = kwargs.get("event_details") or (args[0] if args else None)
            # An execution's own input is refused by StartExecution itself on AWS.
            too_large = None if str(getattr(event_type, "value", event_type)) == "ExecutionStarted" else _payload_too_large(details)
            if too_large:
                self.ferry_over = True
                raise DataLimitExceeded(
                    f"The state's {too_large[0]} has {too_large[1]} bytes, more than the "
                    f"{PAYLOAD_LIMIT} a Step Functions payload may hold.")
        return add_event(self, context, event_type, *args, **kwargs)

    EventManager.add_event = limited_add_event

    eval_body = Program._eval_body

    def program_eval_body(self, env):
        try:
            eval_body(self, env)
        except HistoryLimitExceeded as e:
            if env.is_frame():
                raise
            details = ExecutionFailedEventDetails(error=e.error, cause=str(e))
            env.set_error(error=details)
            env.event_manager.add_event(
                context=env.event_history_context,
                event_type=HistoryEventType.ExecutionFailed,
                event_details=EventDetails(executionFailedEventDetails=details),
            )

    Program._eval_body = program_eval_body


def install_cloudwatch():
    from moto.cloudwatch.responses import CloudWatchResponse

    describe = CloudWatchResponse.describe_alarms

    def describe_alarms(self):
        result = describe(self)
        types = self._get_param("AlarmTypes", []) or ["MetricAlarm"]
        body = getattr(result, "result", None)
        if isinstance(body, dict):
            if "CompositeAlarm" not in types:
                body["CompositeAlarms"] = []
            if "MetricAlarm" not in types:
                body["MetricAlarms"] = []
        return result

    CloudWatchResponse.describe_alarms = describe_alarms

    def put_composite_alarm(self):
        """moto's backend holds composite alarms (an alarm with a rule) but its API does not
        create them: the bed does, so a test can put one in the health gate."""
        from moto.core.responses import EmptyResult

        self.cloudwatch_backend.put_metric_alarm(
            name=self._get_param("AlarmName"), namespace=None, metric_name=None,
            comparison_operator=None, evaluation_periods=None, period=None, threshold=None,
            statistic=None, description=self._get_param("AlarmDescription"), dimensions=[],
            alarm_actions=self._get_param("AlarmActions", []),
            ok_actions=self._get_param("OKActions", []),
            actions_enabled=self._get_param("ActionsEnabled", True),
            rule=self._get_param("AlarmRule"),
        )
        return EmptyResult()

    CloudWatchResponse.put_composite_alarm = put_composite_alarm


def function_timeouts(template_path):
    """Each function binary's Timeout in the SAM template (its own, else the Globals')."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    # CloudFormation's short forms (!Ref, !Sub …) read as plain values.
    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    with open(template_path) as f:
        t = yaml.load(f, Loader=Loader)
    default = ((t.get("Globals") or {}).get("Function") or {}).get("Timeout", 3)
    out = {}
    for res in (t.get("Resources") or {}).values():
        if res.get("Type") != "AWS::Serverless::Function":
            continue
        binary = ((res.get("Metadata") or {}).get("BuildProperties") or {}).get("Binary")
        if binary:
            out[binary] = int((res.get("Properties") or {}).get("Timeout", default))
    return out, int(default)


_invoking = threading.local()


def install_lambda_timeouts():
    """Carries an execution's lowered Lambda timeout (its state machine's tag) to the invoke
    as a header; moto_server.py's invoke reads it with the template's timeouts."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import (
        lambda_eval_utils as leu,
    )

    integration = leu.execute_lambda_function_integration

    def execute(env, parameters, region, state_credentials):
        _invoking.timeout = getattr(env.event_manager, "ferry_lambda_timeout", None)
        try:
            return integration(env=env, parameters=parameters, region=region,
                               state_credentials=state_credentials)
        finally:
            _invoking.timeout = None

    leu.execute_lambda_function_integration = execute
    client_for = leu.boto_client_for

    def boto_client_for(region, service, state_credentials=None):
        client = client_for(region=region, service=service, state_credentials=state_credentials)
        lowered = getattr(_invoking, "timeout", None)
        if service == "lambda" and lowered:
            def add_header(request, **_):
                request.headers[LAMBDA_TIMEOUT_HEADER] = json.dumps(lowered)
            client.meta.events.register("before-sign.lambda.Invoke", add_header)
        return client

    leu.boto_client_for = boto_client_for


def install():
    install_lambda_timeouts()
    install_route53()
    install_stepfunctions()
    install_cloudwatch()
