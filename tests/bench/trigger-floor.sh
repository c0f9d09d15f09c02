#!/usr/bin/env bash
# Where a capture trigger's cost goes: pgbench tps (tpcb-like, scale 20, 4 clients, 20 s) with a
# row trigger on every written table that does more and more, two rounds. Runs against a bed that
# is up (FERRY_BED_DIR, default /tmp/ferry-bed); prints "variant tps" lines. Not in CI.
set -euo pipefail
# shellcheck disable=SC1091
set -a; . "${FERRY_BED_DIR:-/tmp/ferry-bed}/bed.env"; set +a
BIN="$FERRY_BED_SOURCE_BIN"
# The URLs without their password (a command line shows in any process listing); the password
# travels in PGPASSWORD.
{ IFS= read -r U; IFS= read -r D; IFS= read -r PGPASSWORD; } < <(python3 - "$FERRY_BED_SOURCE_URL" <<'PY'
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1])
host = p.hostname + (f":{p.port}" if p.port else "")
netloc = (u.quote(p.username or "", safe="") + "@" if p.username else "") + host
bare = p._replace(netloc=netloc)
print(u.urlunsplit(bare))
print(u.urlunsplit(bare._replace(path="/floor")))
print(u.unquote(p.password or ""))
PY
)
export PGPASSWORD
export PGOPTIONS='-c client_min_messages=warning'
"$BIN/psql" "$U" -qc "DROP DATABASE IF EXISTS floor WITH (FORCE)" -c "CREATE DATABASE floor"
"$BIN/pgbench" -i -q -s 20 "$D" >/dev/null 2>&1
"$BIN/psql" "$D" -qc "ALTER TABLE pgbench_history ADD COLUMN hid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
variant() { # name, table DDL, trigger body using NEW/OLD key as k
  "$BIN/psql" "$D" -q -c "DROP FUNCTION IF EXISTS ft() CASCADE; DROP TABLE IF EXISTS flog;" >/dev/null
  if [ -n "$2" ]; then
    "$BIN/psql" "$D" -q -c "$2" -c "CREATE FUNCTION ft() RETURNS trigger LANGUAGE plpgsql AS \$f\$ BEGIN $3 RETURN NULL; END \$f\$;" >/dev/null
    for t in pgbench_accounts pgbench_tellers pgbench_branches pgbench_history; do
      "$BIN/psql" "$D" -q -c "CREATE TRIGGER ft AFTER INSERT OR UPDATE OR DELETE ON $t FOR EACH ROW EXECUTE FUNCTION ft()" >/dev/null
    done
  fi
  "$BIN/psql" "$D" -q -c "VACUUM ANALYZE pgbench_accounts, pgbench_tellers, pgbench_branches" >/dev/null; sleep 2
  tps=$("$BIN/pgbench" -n -c 4 -j 2 -M prepared -T 20 "$D" 2>/dev/null | awk '/^tps = /{print $3}')
  echo "$1 $tps"
}
for round in 1 2; do
  variant none "" ""
  variant heap_const "CREATE TABLE flog (n int)" "INSERT INTO flog VALUES (1);"
  variant identity_pk "CREATE TABLE flog (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, n int)" "INSERT INTO flog (n) VALUES (1);"
  variant pk_text_jsonb "CREATE TABLE flog (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, rel text NOT NULL, pk jsonb)" "INSERT INTO flog (rel, pk) VALUES (TG_TABLE_NAME, pg_catalog.jsonb_build_array(1));"
  variant ferry_like "CREATE TABLE flog (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, rel text NOT NULL, pk jsonb, at timestamptz NOT NULL DEFAULT clock_timestamp())" "IF TG_OP = 'DELETE' THEN INSERT INTO flog (rel, pk) VALUES ('public.x', pg_catalog.jsonb_build_array(OLD.ctid::text)); ELSE INSERT INTO flog (rel, pk) VALUES ('public.x', pg_catalog.jsonb_build_array(NEW.ctid::text)); END IF;"
  variant no_index_text_jsonb "CREATE TABLE flog (rel text NOT NULL, pk jsonb, at timestamptz NOT NULL DEFAULT clock_timestamp())" "INSERT INTO flog (rel, pk) VALUES ('public.x', pg_catalog.jsonb_build_array(1));"
done
"$BIN/psql" "$U" -qc "DROP DATABASE IF EXISTS floor WITH (FORCE)"
