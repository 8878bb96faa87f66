#!/usr/bin/env bash
# What a run wrote to the WAL, per relation (table or index) of one database:
# records, bytes and full-page images, from pg_walinspect (PostgreSQL 15+).
#
#   scripts/wal-by-relation.sh start            # prints the current LSN
#   scripts/wal-by-relation.sh report START DB [COMMANDS]
#
# Take START before the run, keep the run's database (`bench --keep`), then
# report: each record is attributed to the first block it touches; records
# that touch no block (commits, ...) are listed by their kind. With COMMANDS,
# the figures are also given per command.
set -euo pipefail
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h "${PGHOST:-127.0.0.1}" -U "${PGUSER:-postgres}")
case "${1:-}" in
start)
    "${PSQL[@]}" -d postgres -Atc "CREATE EXTENSION IF NOT EXISTS pg_walinspect" >/dev/null
    "${PSQL[@]}" -d postgres -Atc "SELECT pg_current_wal_lsn()"
    ;;
report)
    start=$2 db=$3 n=${4:-1}
    end=$("${PSQL[@]}" -d postgres -Atc "SELECT pg_current_wal_flush_lsn()")
    dboid=$("${PSQL[@]}" -d postgres -Atc "SELECT oid FROM pg_database WHERE datname = '$db'")
    tmp=$(mktemp)
    trap 'rm -f "$tmp"' EXIT
    "${PSQL[@]}" -d postgres -c "\copy (SELECT resource_manager || ':' || record_type,
            record_length, fpi_length,
            (regexp_match(block_ref, 'rel \d+/(\d+)/(\d+)'))[1]::oid,
            (regexp_match(block_ref, 'rel \d+/(\d+)/(\d+)'))[2]::oid
       FROM pg_get_wal_records_info('$start', '$end')) TO '$tmp'"
    "${PSQL[@]}" -d "$db" <<SQL
CREATE TEMP TABLE wal (kind text, len int, fpi int, db oid, node oid);
\copy wal FROM '$tmp'
\echo WAL from $start to $end, database $db ($dboid), per command of $n
SELECT COALESCE(c.relname, CASE WHEN w.db IS NULL THEN '(no block) ' || w.kind
                                 WHEN w.db = $dboid THEN '(relfilenode ' || w.node || ')'
                                 ELSE '(other database)' END) AS relation,
       count(*) AS records, round(count(*)::numeric / $n, 2) AS per_command,
       round(sum(len)::numeric / $n) AS bytes_per_command,
       sum((fpi > 0)::int) AS fpis
  FROM wal w
  LEFT JOIN pg_class c ON w.db = $dboid AND c.relfilenode = w.node
 GROUP BY 1 ORDER BY 2 DESC;
SELECT count(*) AS records, round(count(*)::numeric / $n, 2) AS per_command,
       round(sum(len)::numeric / $n) AS bytes_per_command
  FROM wal w WHERE w.db = $dboid OR w.db IS NULL;
SQL
    ;;
*)
    sed -n '2,12p' "$0"; exit 2 ;;
esac
