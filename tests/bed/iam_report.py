#!/usr/bin/env python3
"""After the tests: what the emulator's IAM enforcement decided for Ferry's own processes (the
role sessions named after a binary; the `probe` sessions are the tests that try what a role may
not do). Exit 1 when any call of Ferry's was denied: a permission the template lacks.

    python3 iam_report.py <bed>/iam.log
"""

import collections
import json
import sys


def main(path):
    calls, denied = collections.Counter(), []
    try:
        lines = open(path).read().splitlines()
    except FileNotFoundError:
        sys.exit(f"[iam] {path} is missing: the emulator recorded no decision (is enforcement on?)")
    for line in lines:
        e = json.loads(line)
        role, session = e["principal"].split("/")[1:3]
        if session == "probe":
            continue
        calls[role] += 1
        if not e["allowed"]:
            denied.append(e)
    for role, n in sorted(calls.items()):
        print(f"[iam] {role}: {n} distinct calls authorised")
    for e in denied:
        print(f"[iam] DENIED {e['principal']}: {e['action']} on {e['resource']} ({e.get('why', '')})")
    if denied:
        sys.exit(f"[iam] {len(denied)} calls of Ferry's were denied by the template's roles")
    if not calls:
        sys.exit("[iam] no call of Ferry's ran as a role: the bed's role wiring is broken")


if __name__ == "__main__":
    main(sys.argv[1])
