#!/usr/bin/env python3
"""The AWS emulator for the test bed: moto's server on 127.0.0.1, with its Step Functions
interpreter switched on (off by default: executions would stay RUNNING forever) and Lambda in
its no-Docker mode. The interpreter calls the other services back on MOTO_PORT, which the
caller sets to the port served here."""

import argparse
import os
import signal
import threading
from pathlib import Path

from moto.core.config import default_user_config
from moto.server import ThreadedMotoServer


def forward_lambda_invokes(base):
    """The emulator's Lambda invoke goes to cargo lambda watch, which runs the real function
    binaries. A function error comes back from it as HTTP 500 with {errorType, errorMessage};
    real Lambda answers 200 with X-Amz-Function-Error, which is what Step Functions reads.
    An invocation past its function's timeout (aws_rules.py) answers as Lambda does."""
    import json
    import socket
    import urllib.error
    import urllib.request

    from moto.awslambda_simple.models import LambdaSimpleBackend

    import aws_rules

    template = Path(__file__).resolve().parents[2] / "infra" / "template.yaml"
    timeouts, default_timeout = aws_rules.function_timeouts(template)

    def invoke(self, function_name, qualifier, body, headers, response_headers):
        name = function_name
        if name.startswith("arn:"):
            name = name.split(":function:", 1)[1].split(":", 1)[0]
        data = body if isinstance(body, bytes) else (body or "{}").encode()
        req = urllib.request.Request(f"{base}/2015-03-31/functions/{name}/invocations",
                                     data=data, method="POST",
                                     headers={"content-type": "application/json"})
        limit = timeouts.get(name, default_timeout)
        lowered = json.loads((headers or {}).get(aws_rules.LAMBDA_TIMEOUT_HEADER) or "{}")
        lowered = lowered.get(name, lowered.get("*"))
        if lowered:
            limit = min(limit, int(lowered))
        try:
            with urllib.request.urlopen(req, timeout=limit) as resp:
                return resp.read()
        except urllib.error.HTTPError as e:
            response_headers["x-amz-function-error"] = "Unhandled"
            return e.read()
        except (TimeoutError, socket.timeout, urllib.error.URLError) as e:
            if isinstance(e, urllib.error.URLError) and not isinstance(e.reason, (TimeoutError, socket.timeout)):
                raise
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps({
                "errorType": "Sandbox.Timedout",
                "errorMessage": f"RequestId: bed Error: Task timed out after {limit:.2f} seconds",
            }).encode()

    LambdaSimpleBackend.invoke = invoke


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ready-file", required=True, help="written once the server answers")
    args = ap.parse_args()
    if os.environ.get("MOTO_PORT") != str(args.port):
        raise SystemExit("moto_server: set MOTO_PORT to --port (the interpreter calls back on it)")
    # In-process config: moto's /moto-api/config GET does not report the stepfunctions key,
    # so set it here, before the first request, where nothing can race it.
    default_user_config["stepfunctions"] = {"execute_state_machine": True}
    default_user_config["lambda"] = {"use_docker": False}
    # moto advances an ECS task one state per DescribeTasks (RUNNING → … → STOPPED after a
    # few reads); a real task runs until it is stopped. StopTask still stops it at once.
    from moto.moto_api import state_manager
    state_manager.set_transition("ecs::task", {"progression": "manual", "times": 10**9})
    # Requests signed with a role session's credentials are authorised against the role's
    # policies (iam_enforce.py); the harness's own key is not checked.
    import iam_enforce
    iam_enforce.install()
    # What a real account refuses and moto forgives (aws_rules.py names each rule's source).
    import aws_rules
    aws_rules.install()
    # Resource types moto's CloudFormation cannot create (ferry plan's destination.yaml has
    # them): created in the emulator's service backends as CloudFormation would.
    import cfn_standins
    cfn_standins.install()
    forward = os.environ.get("FERRY_LAMBDA_FORWARD")
    if forward:
        forward_lambda_invokes(forward)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    server.start()
    Path(args.ready_file).write_text(str(os.getpid()))
    print(f"moto listening on 127.0.0.1:{args.port} with the Step Functions interpreter on", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
