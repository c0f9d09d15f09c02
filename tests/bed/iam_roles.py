#!/usr/bin/env python3
"""The template's roles, made real in the emulator: every function's role, the worker's and the
endpoint's task roles, with the policies `infra/template.yaml` gives them, resolved for this bed.
Each principal gets a role session (STS AssumeRole in the emulator), and its credentials are
written to `<bed>/roles/<binary>.env` (and a second session, for tests that probe what the
role may not do, to `<bed>/roles/probe/<binary>.env`), which the bed hands to the process that runs as it (the
function binaries through `lambda_role.sh`, the worker and endpoint tasks through the test
harness's ECS runner), as Lambda and ECS hand a role's credentials to their code.

    python iam_roles.py <template> <emulator url> <roles dir>

How the template's references are bound here (the bed is one "stack"):
- `ParamPrefix` and the other parameters: the template's defaults;
- `StateTable`, `WorkerCluster`: the bed's one table and cluster, exactly;
- `WorkerTaskDefinition`: the bed's task definition family, any revision (the tests register
  it again; a stack update moves `Ref` to the new revision the same way);
- `HostedZoneId` and `ApprovalTopic`: every test makes its own zone and topic, so these are
  bound to any hosted zone and to any topic named `ferry-*`: the service, region, account and
  resource type are still checked, the one zone or topic is not.
"""

import json
import re
import sys
from pathlib import Path

import boto3
import yaml

ACCOUNT = "123456789012"
REGION = "us-east-1"
PARTITION = "aws"
STACK = "ferry"

# The bed's names for the stack's shared resources (bed.py REHEARSAL).
TABLE = "ferry-rehearsal"
CLUSTER = "ferry-rehearsal"
TASK_FAMILY = "ferry-worker"

# The binary each task definition runs.
PROBE = "probe"

TASK_BINARIES = {"WorkerTaskDefinition": "ferry-worker", "EndpointTaskDefinition": "ferry-endpoint"}


def role_arn(name):
    return f"arn:{PARTITION}:iam::{ACCOUNT}:role/{name}"


def bindings(template):
    """What `Ref` and `Fn::GetAtt ... Arn` give for each name the policies use."""
    refs = {
        "AWS::Partition": PARTITION,
        "AWS::Region": REGION,
        "AWS::AccountId": ACCOUNT,
        "AWS::StackName": STACK,
        "HostedZoneId": "*",
        "StateTable": TABLE,
        "WorkerCluster": CLUSTER,
        "WorkerTaskDefinition": f"arn:{PARTITION}:ecs:{REGION}:{ACCOUNT}:task-definition/{TASK_FAMILY}:*",
        "ApprovalTopic": f"arn:{PARTITION}:sns:{REGION}:{ACCOUNT}:ferry-*",
        # The bed's stand-ins for RDS-managed master passwords are named as RDS names them.
        "TargetMasterSecretArn": f"arn:{PARTITION}:secretsmanager:{REGION}:{ACCOUNT}:secret:rds!db-*",
    }
    for name, p in template.get("Parameters", {}).items():
        if name not in refs and "Default" in p:
            refs[name] = str(p["Default"])
    arns = {
        "StateTable": f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT}:table/{TABLE}",
        "FerryKey": f"arn:{PARTITION}:kms:{REGION}:{ACCOUNT}:key/bed",
        "ApprovalTopicKey": f"arn:{PARTITION}:kms:{REGION}:{ACCOUNT}:key/bed-topic",
        "CanaryTickDeadLetters": f"arn:{PARTITION}:sqs:{REGION}:{ACCOUNT}:ferry-canary-dlq",
    }
    for name, r in template["Resources"].items():
        if r["Type"] == "AWS::IAM::Role":
            arns[name] = role_arn(name)
    return refs, arns


# The template's Conditions, evaluated with the bed's bindings (set by principals()).
CONDITIONS = {}
# What `Ref: AWS::NoValue` resolves to: removed from the list or map that holds it.
NO_VALUE = object()


def condition(name, refs, arns, where, seen=()):
    """A template condition's value under the bed's bindings."""
    if name in seen:
        raise SystemExit(f"iam_roles: {where}: condition {name} refers to itself")
    if name not in CONDITIONS:
        raise SystemExit(f"iam_roles: {where}: no condition {name}")
    return _truth(CONDITIONS[name], refs, arns, where, seen + (name,))


def _truth(expr, refs, arns, where, seen):
    (fn, arg), = expr.items()
    if fn == "Condition":
        return condition(arg, refs, arns, where, seen)
    if fn == "Fn::Not":
        return not _truth(arg[0], refs, arns, where, seen)
    if fn == "Fn::And":
        return all(_truth(a, refs, arns, where, seen) for a in arg)
    if fn == "Fn::Or":
        return any(_truth(a, refs, arns, where, seen) for a in arg)
    if fn == "Fn::Equals":
        a, b = (_text(v, refs, arns, where) for v in arg)
        return a == b
    raise SystemExit(f"iam_roles: {where}: {fn} in a condition is not evaluated by the bed")


def _text(value, refs, arns, where):
    if isinstance(value, dict) and list(value) == ["Fn::Join"]:
        sep, items = value["Fn::Join"]
        items = resolve(items, refs, arns, where)
        return items if isinstance(items, str) else sep.join(items)
    return str(resolve(value, refs, arns, where))


def resolve(value, refs, arns, where):
    """Resolves the intrinsic functions a policy may use; anything else is an error naming
    where it is, so a new construct in the template is taught here rather than skipped."""
    if isinstance(value, list):
        out = [resolve(v, refs, arns, where) for v in value]
        return [v for v in out if v is not NO_VALUE]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        (fn, arg), = value.items()
        if fn == "Ref" and arg == "AWS::NoValue":
            return NO_VALUE
        if fn == "Fn::If":
            name, yes, no = arg
            return resolve(yes if condition(name, refs, arns, where) else no, refs, arns, where)
        if fn == "Ref":
            if arg not in refs:
                raise SystemExit(f"iam_roles: {where}: no binding for Ref {arg}")
            return refs[arg]
        if fn == "Fn::GetAtt":
            name, attr = arg if isinstance(arg, list) else arg.split(".", 1)
            if attr != "Arn" or name not in arns:
                raise SystemExit(f"iam_roles: {where}: no binding for GetAtt {name}.{attr}")
            return arns[name]
        if fn == "Fn::Sub":
            text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
            extra = {k: resolve(v, refs, arns, where) for k, v in extra.items()}

            def sub(m):
                key = m.group(1)
                if key in extra:
                    return extra[key]
                if key.endswith(".Arn") and key[:-4] in arns:
                    return arns[key[:-4]]
                if key in refs:
                    return refs[key]
                raise SystemExit(f"iam_roles: {where}: no binding for ${{{key}}}")

            return re.sub(r"\$\{([^}!]+)\}", sub, text)
        if fn.startswith("Fn::"):
            raise SystemExit(f"iam_roles: {where}: {fn} is not resolved by the bed")
    out = {k: resolve(v, refs, arns, where) for k, v in value.items()}
    return {k: v for k, v in out.items() if v is not NO_VALUE}


def principals(template):
    """(binary, role name, [policy documents]) for every principal that runs Ferry's code."""
    refs, arns = bindings(template)
    CONDITIONS.clear()
    CONDITIONS.update(template.get("Conditions", {}))
    out = []
    resources = template["Resources"]
    for name, r in resources.items():
        props = r.get("Properties", {})
        if r["Type"] == "AWS::Serverless::Function":
            binary = r.get("Metadata", {}).get("BuildProperties", {}).get("Binary")
            if not binary:
                raise SystemExit(f"iam_roles: {name} names no binary (Metadata.BuildProperties.Binary)")
            docs = []
            for i, p in enumerate(props.get("Policies", [])):
                if not isinstance(p, dict) or "Statement" not in p:
                    raise SystemExit(f"iam_roles: {name}.Policies[{i}] is not an inline statement list")
                docs.append({"Version": "2012-10-17",
                             "Statement": resolve(p["Statement"], refs, arns, f"{name}.Policies[{i}]")})
            out.append((binary, f"{name}Role", docs))
        elif r["Type"] == "AWS::ECS::TaskDefinition" and name in TASK_BINARIES:
            role = props["TaskRoleArn"]["Fn::GetAtt"][0]
            docs = [resolve(p["PolicyDocument"], refs, arns, f"{role}.{p['PolicyName']}")
                    for p in resources[role]["Properties"].get("Policies", [])]
            out.append((TASK_BINARIES[name], role, docs))
    missing = set(TASK_BINARIES.values()) - {b for b, _, _ in out}
    if missing:
        raise SystemExit(f"iam_roles: no task definition runs {sorted(missing)}")
    return out


TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": ["lambda.amazonaws.com", "ecs-tasks.amazonaws.com"]},
                   "Action": "sts:AssumeRole"}],
}


def main(template_path, endpoint, roles_dir):
    template = yaml.safe_load(Path(template_path).read_text())
    roles_dir = Path(roles_dir)
    roles_dir.mkdir(parents=True, exist_ok=True)
    kw = dict(endpoint_url=endpoint, region_name=REGION,
              aws_access_key_id="testing", aws_secret_access_key="testing")
    iam, sts = boto3.client("iam", **kw), boto3.client("sts", **kw)
    made = []
    for binary, role, docs in principals(template):
        iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(TRUST))
        for i, doc in enumerate(docs):
            iam.put_role_policy(RoleName=role, PolicyName=f"policy{i}", PolicyDocument=json.dumps(doc))
        # The binary's own session, and a second one (session name `probe`) for the tests
        # that try what the role must not do, so their denials are told apart from Ferry's.
        for session, path in ((binary, roles_dir / f"{binary}.env"),
                              (PROBE, roles_dir / PROBE / f"{binary}.env")):
            creds = sts.assume_role(RoleArn=role_arn(role), RoleSessionName=session,
                                    DurationSeconds=43200)["Credentials"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(
                f"AWS_ACCESS_KEY_ID={creds['AccessKeyId']}\n"
                f"AWS_SECRET_ACCESS_KEY={creds['SecretAccessKey']}\n"
                f"AWS_SESSION_TOKEN={creds['SessionToken']}\n")
        made.append(binary)
    # The worker's execution role exists so RunTask can pass it; nothing runs as it here.
    iam.create_role(RoleName="WorkerExecutionRole", AssumeRolePolicyDocument=json.dumps(TRUST))
    print(" ".join(made))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
