#!/usr/bin/env bash
# Where a capture trigger's cost goes: pgbench tps (tpcb-like, scale 20, 4 clients, 20 s) with
# row triggers on every written table shaped like Ferry's capture before and after the log's
# redesign, and like the alternatives measured on the way (ROUNDS rounds, default 3). Runs
# against a bed that is up (FERRY_BED_DIR, default /tmp/ferry-bed); prints "variant tps" lines.
# Not in CI. tps here moves by ±30 % from one run to the next on a busy host: the per-row cost
# beside it (tests/bench/trigger-rowcost.sh) is the steadier figure.
set -euo pipefail
# shellcheck source=tests/bench/bed-source.sh
. "$(dirname "$0")/bed-source.sh" floor
"$BIN/psql" "$U" -qc "DROP DATABASE IF EXISTS floor WITH (FORCE)" -c "CREATE DATABASE floor"
"$BIN/pgbench" -i -q -s 20 "$D" >/dev/null 2>&1
"$BIN/psql" "$D" -qXc "ALTER TABLE pgbench_history ADD COLUMN hid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
# The tables pgbench writes and their primary keys (pgbench_history gets one above).
TABLES="pgbench_accounts:aid pgbench_tellers:tid pgbench_branches:bid pgbench_history:hid"
LOG_PK="CREATE TABLE flog (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, rel text NOT NULL, pk jsonb, at timestamptz NOT NULL DEFAULT clock_timestamp())"
LOG_HEAP="CREATE TABLE flog (id bigint GENERATED ALWAYS AS IDENTITY, rel text NOT NULL, pk jsonb, at timestamptz NOT NULL DEFAULT clock_timestamp())"
q() { "$BIN/psql" "$D" -qX -v ON_ERROR_STOP=1 "$@" >/dev/null; }
reset() {
  q -c "DROP FUNCTION IF EXISTS ft() CASCADE; DROP TABLE IF EXISTS flog;"
  for tk in $TABLES; do t=${tk%%:*}
    q -c "DROP FUNCTION IF EXISTS ft_$t() CASCADE; DROP FUNCTION IF EXISTS ft_old_$t() CASCADE; DROP TABLE IF EXISTS flog_$t;"
  done
}
run() {
  q -c "VACUUM ANALYZE pgbench_accounts, pgbench_tellers, pgbench_branches" -c "CHECKPOINT"; sleep 2
  tps=$("$BIN/pgbench" -n -c 4 -j 2 -M prepared -T "${SECONDS_PER_RUN:-20}" "$D" 2>/dev/null | awk '/^tps = /{print $3}')
  echo "$1 $tps"
}
one_function() { # name, log DDL, body (one function on every table)
  reset
  if [ -n "$2" ]; then
    q -c "$2" -c "CREATE FUNCTION ft() RETURNS trigger LANGUAGE plpgsql AS \$f\$ BEGIN $3 RETURN NULL; END \$f\$;"
    for tk in $TABLES; do
      q -c "CREATE TRIGGER ft AFTER INSERT OR UPDATE OR DELETE ON ${tk%%:*} FOR EACH ROW EXECUTE FUNCTION ft()"
    done
  fi
  run "$1"
}
# Ferry's layout before this round: one function per table branching on TG_OP, the key as jsonb,
# old and new keys compared in the function.
ferry_branching() { # name, log DDL
  reset; q -c "$2"
  for tk in $TABLES; do t=${tk%%:*} k=${tk#*:}
    q -c "CREATE FUNCTION ft_$t() RETURNS trigger LANGUAGE plpgsql AS \$f\$ BEGIN
      IF TG_OP = 'INSERT' THEN INSERT INTO flog (rel, pk) VALUES ('public.$t', pg_catalog.jsonb_build_array(NEW.$k));
      ELSIF TG_OP = 'DELETE' THEN INSERT INTO flog (rel, pk) VALUES ('public.$t', pg_catalog.jsonb_build_array(OLD.$k));
      ELSE INSERT INTO flog (rel, pk) VALUES ('public.$t', pg_catalog.jsonb_build_array(NEW.$k));
        IF ROW(OLD.$k) IS DISTINCT FROM ROW(NEW.$k) THEN
          INSERT INTO flog (rel, pk) VALUES ('public.$t', pg_catalog.jsonb_build_array(OLD.$k)); END IF;
      END IF; RETURN NULL; END \$f\$" \
      -c "CREATE TRIGGER ft AFTER INSERT OR UPDATE OR DELETE ON $t FOR EACH ROW EXECUTE FUNCTION ft_$t()"
  done
  run "$1"
}
# The new layout: one function logs the new key (INSERT, UPDATE), one the old key (DELETE, and an
# UPDATE whose key changed, chosen by the trigger's WHEN without calling the function).
# Arguments: name, log DDL, and optionally the log's columns and values (KEY is the key column).
ferry_split() {
  reset; q -c "$2"
  cols=${3:-rel, pk} vals=${4:-"'public.\$t', pg_catalog.jsonb_build_array(KEY)"}
  for tk in $TABLES; do t=${tk%%:*} k=${tk#*:}
    v=${vals//\$t/$t}
    q -c "CREATE FUNCTION ft_$t() RETURNS trigger LANGUAGE plpgsql AS \$f\$ BEGIN
        INSERT INTO flog ($cols) VALUES (${v//KEY/NEW.$k}); RETURN NULL; END \$f\$" \
      -c "CREATE FUNCTION ft_old_$t() RETURNS trigger LANGUAGE plpgsql AS \$f\$ BEGIN
        INSERT INTO flog ($cols) VALUES (${v//KEY/OLD.$k}); RETURN NULL; END \$f\$" \
      -c "CREATE TRIGGER ft AFTER INSERT OR UPDATE ON $t FOR EACH ROW EXECUTE FUNCTION ft_$t()" \
      -c "CREATE TRIGGER ft_del AFTER DELETE ON $t FOR EACH ROW EXECUTE FUNCTION ft_old_$t()" \
      -c "CREATE TRIGGER ft_rekey AFTER UPDATE ON $t FOR EACH ROW WHEN (ROW(OLD.$k) IS DISTINCT FROM ROW(NEW.$k)) EXECUTE FUNCTION ft_old_$t()"
  done
  run "$1"
}
# Per-table logs with the key in typed columns (the issue's suggestion), no index.
typed_per_table() {
  reset
  for tk in $TABLES; do t=${tk%%:*} k=${tk#*:}
    q -c "CREATE TABLE flog_$t (id bigint GENERATED ALWAYS AS IDENTITY, k int, at timestamptz NOT NULL DEFAULT clock_timestamp())" \
      -c "CREATE FUNCTION ft_$t() RETURNS trigger LANGUAGE plpgsql AS \$f\$ BEGIN
        INSERT INTO flog_$t (k) VALUES (NEW.$k); RETURN NULL; END \$f\$" \
      -c "CREATE TRIGGER ft AFTER INSERT OR UPDATE ON $t FOR EACH ROW EXECUTE FUNCTION ft_$t()"
  done
  run "$1"
}
LOG_NOW="CREATE TABLE flog (id bigint GENERATED ALWAYS AS IDENTITY, rel text NOT NULL, k bigint, u uuid, pk jsonb, at timestamptz NOT NULL DEFAULT clock_timestamp())"
for round in $(seq 1 "${ROUNDS:-3}"); do
  one_function none "" ""
  one_function empty "CREATE TABLE flog (n int)" ""
  one_function insert_const "CREATE TABLE flog (n int)" "INSERT INTO flog VALUES (1);"
  ferry_branching ferry_before "$LOG_PK"
  ferry_branching ferry_before_no_index "$LOG_HEAP"
  ferry_split ferry_split_jsonb_no_index "$LOG_HEAP"
  ferry_split ferry_now "$LOG_NOW" "rel, k" "'public.\$t', KEY"
  typed_per_table typed_per_table_no_index
done
"$BIN/psql" "$U" -qc "DROP DATABASE IF EXISTS floor WITH (FORCE)"
