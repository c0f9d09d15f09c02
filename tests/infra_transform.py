"""Expands infra/template.yaml with the SAM translator (offline, from the SAM CLI's venv) and
checks what SAM adds on its own: every function's generated role may manage its VPC network
interfaces (the functions run in the worker's subnets), and the canary tick, the one function
invoked asynchronously, has a dead-letter queue it may send to. Exit 1 names what is missing.

    python tests/infra_transform.py infra/template.yaml
"""

import re
import sys

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

VPC_ROLE = "arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"


class Policies:
    """The managed policies SAM may attach, by name (SAM asks IAM for this list otherwise)."""

    def load(self):
        return {
            "AWSLambdaBasicExecutionRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
            "AWSLambdaVPCAccessExecutionRole": VPC_ROLE,
        }


def main(path):
    text = open(path).read()
    # Local paths become S3 URIs at `sam deploy`; the translator wants the deployed form.
    text = text.replace("CodeUri: ..", "CodeUri: s3://bucket/code")
    text = re.sub(r"DefinitionUri: .*", "DefinitionUri: s3://bucket/statemachine.json", text)
    resources = transform(yaml_parse(text), {}, Policies())["Resources"]
    problems = []
    functions = [n for n, r in resources.items() if r["Type"] == "AWS::Lambda::Function"]
    if not functions:
        problems.append("no function after the transform")
    for name in functions:
        props = resources[name]["Properties"]
        if "VpcConfig" not in props:
            problems.append(f"{name} has no VpcConfig")
        role = resources.get(f"{name}Role", {}).get("Properties", {})
        if VPC_ROLE not in role.get("ManagedPolicyArns", []):
            problems.append(f"{name}Role lacks AWSLambdaVPCAccessExecutionRole")
    tick = resources.get("CanaryTickFunction", {}).get("Properties", {})
    if "DeadLetterConfig" not in tick:
        problems.append("CanaryTickFunction has no dead-letter queue")
    policies = resources.get("CanaryTickFunctionRole", {}).get("Properties", {}).get("Policies", [])
    if not any(p["PolicyName"] == "DeadLetterQueuePolicy" for p in policies):
        problems.append("CanaryTickFunctionRole may not send to its dead-letter queue")
    for p in problems:
        print(f"[infra] {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"[infra] SAM transform ok: {len(functions)} functions in the VPC, the canary tick's DLQ wired")


if __name__ == "__main__":
    main(sys.argv[1])
