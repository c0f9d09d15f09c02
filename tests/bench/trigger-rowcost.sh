#!/usr/bin/env bash
# What a capture trigger costs per written row, steadier than pgbench tps on a noisy host: one
# table of 100,000 rows per trigger variant, all set up at once; then, ROUNDS times (default 10),
# each table in turn gets one UPDATE of every row (firing its row trigger 100,000 times, rolled
# back). Prints per variant the best and the median execution time in µs per row. Runs against
# a bed that is up (FERRY_BED_DIR, default /tmp/ferry-bed). Not in CI.
set -euo pipefail
# shellcheck source=tests/bench/bed-source.sh
. "$(dirname "$0")/bed-source.sh" rowcost
q() { "$BIN/psql" "$D" -qX -v ON_ERROR_STOP=1 "$@" >/dev/null; }
"$BIN/psql" "$U" -qXc "DROP DATABASE IF EXISTS rowcost WITH (FORCE)" -c "CREATE DATABASE rowcost"

VARIANTS="none empty insert_const ferry_before ferry_now ferry_now_jsonb typed_per_table"
log_of() { # the log a variant writes
  case $1 in
    insert_const) echo "CREATE TABLE log_$1 (n int)";;
    ferry_before) echo "CREATE TABLE log_$1 (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, rel text NOT NULL, pk jsonb, at timestamptz NOT NULL DEFAULT clock_timestamp())";;
    ferry_now|ferry_now_jsonb) echo "CREATE TABLE log_$1 (id bigint GENERATED ALWAYS AS IDENTITY, rel text NOT NULL, k bigint, u uuid, pk jsonb, at timestamptz NOT NULL DEFAULT clock_timestamp())";;
    typed_per_table) echo "CREATE TABLE log_$1 (id bigint GENERATED ALWAYS AS IDENTITY, k int, at timestamptz NOT NULL DEFAULT clock_timestamp())";;
  esac
}
body_of() { # $1 variant, $2 NEW or OLD
  case $1 in
    empty) echo "";;
    insert_const) echo "INSERT INTO log_$1 VALUES (1);";;
    # Ferry before the redesign: one function branching on TG_OP, the key as jsonb, an indexed log.
    ferry_before) echo "IF TG_OP = 'INSERT' THEN INSERT INTO log_$1 (rel, pk) VALUES ('public.t_$1', pg_catalog.jsonb_build_array(NEW.id));
      ELSIF TG_OP = 'DELETE' THEN INSERT INTO log_$1 (rel, pk) VALUES ('public.t_$1', pg_catalog.jsonb_build_array(OLD.id));
      ELSE INSERT INTO log_$1 (rel, pk) VALUES ('public.t_$1', pg_catalog.jsonb_build_array(NEW.id));
        IF ROW(OLD.id) IS DISTINCT FROM ROW(NEW.id) THEN
          INSERT INTO log_$1 (rel, pk) VALUES ('public.t_$1', pg_catalog.jsonb_build_array(OLD.id)); END IF;
      END IF;";;
    # Ferry now: a function per row image, a log without an index, an integer key typed.
    ferry_now) echo "INSERT INTO log_$1 (rel, k) VALUES ('public.t_$1', $2.id);";;
    # … and for a key that is neither one integer nor one uuid column (jsonb).
    ferry_now_jsonb) echo "INSERT INTO log_$1 (rel, pk) VALUES ('public.t_$1', pg_catalog.jsonb_build_array($2.id));";;
    typed_per_table) echo "INSERT INTO log_$1 (k) VALUES ($2.id);";;
  esac
}
for v in $VARIANTS; do
  q -c "CREATE TABLE t_$v (id int PRIMARY KEY, n int NOT NULL)" \
    -c "INSERT INTO t_$v SELECT g, 0 FROM generate_series(1, 100000) g"
  [ "$v" = none ] && continue
  log=$(log_of "$v"); [ -n "$log" ] && q -c "$log"
  q -c "CREATE FUNCTION f_$v() RETURNS trigger LANGUAGE plpgsql AS \$f\$ BEGIN $(body_of "$v" NEW) RETURN NULL; END \$f\$"
  case $v in
    ferry_now|ferry_now_jsonb)
      q -c "CREATE FUNCTION f_old_$v() RETURNS trigger LANGUAGE plpgsql AS \$f\$ BEGIN $(body_of "$v" OLD) RETURN NULL; END \$f\$" \
        -c "CREATE TRIGGER a AFTER INSERT OR UPDATE ON t_$v FOR EACH ROW EXECUTE FUNCTION f_$v()" \
        -c "CREATE TRIGGER b AFTER DELETE ON t_$v FOR EACH ROW EXECUTE FUNCTION f_old_$v()" \
        -c "CREATE TRIGGER c AFTER UPDATE ON t_$v FOR EACH ROW WHEN (ROW(OLD.id) IS DISTINCT FROM ROW(NEW.id)) EXECUTE FUNCTION f_old_$v()";;
    typed_per_table)
      q -c "CREATE TRIGGER a AFTER INSERT OR UPDATE ON t_$v FOR EACH ROW EXECUTE FUNCTION f_$v()";;
    *) q -c "CREATE TRIGGER a AFTER INSERT OR UPDATE OR DELETE ON t_$v FOR EACH ROW EXECUTE FUNCTION f_$v()";;
  esac
done
q -c "VACUUM ANALYZE"
: > /tmp/rowcost.$$
for _ in $(seq 1 "${ROUNDS:-10}"); do
  for v in $VARIANTS; do
    ms=$("$BIN/psql" "$D" -qXAt -c "BEGIN" \
      -c "EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) UPDATE t_$v SET n = n + 1" -c "ROLLBACK" |
      python3 -c 'import json,sys; print(json.loads(sys.stdin.read())[0]["Execution Time"])')
    echo "$v $ms" >> /tmp/rowcost.$$
  done
  q -c "VACUUM"
done
python3 - "$VARIANTS" /tmp/rowcost.$$ <<'PY'
import statistics, sys
order = sys.argv[1].split()
runs = {}
for line in open(sys.argv[2]):
    v, ms = line.split()
    runs.setdefault(v, []).append(float(ms) * 1000 / 100000)
for v in order:
    r = runs[v]
    print(f"{v} best {min(r):.2f} median {statistics.median(r):.2f} us/row ({len(r)} runs)")
PY
rm -f /tmp/rowcost.$$
"$BIN/psql" "$U" -qXc "DROP DATABASE IF EXISTS rowcost WITH (FORCE)"
