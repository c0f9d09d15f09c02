# Sourced by the bench scripts: the bed's source server for psql and pgbench. Takes the name of
# a scratch database; sets BIN (the source's client tools), U (the server's URL), D (the scratch
# database's URL), both without their password (a command line shows in any process listing),
# and exports PGPASSWORD and quiet PGOPTIONS.
# shellcheck disable=SC1091
set -a; . "${FERRY_BED_DIR:-/tmp/ferry-bed}/bed.env"; set +a
BIN="$FERRY_BED_SOURCE_BIN"
{ IFS= read -r U; IFS= read -r D; IFS= read -r PGPASSWORD; } < <(python3 - "$FERRY_BED_SOURCE_URL" "$1" <<'PY'
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1])
host = p.hostname + (f":{p.port}" if p.port else "")
netloc = (u.quote(p.username or "", safe="") + "@" if p.username else "") + host
bare = p._replace(netloc=netloc)
print(u.urlunsplit(bare))
print(u.urlunsplit(bare._replace(path="/" + sys.argv[2])))
print(u.unquote(p.password or ""))
PY
)
export PGPASSWORD
export PGOPTIONS='-c client_min_messages=warning'
