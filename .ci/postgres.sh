# Sourced by .ci/run: a throwaway PostgreSQL cluster for the store tests (issue 17), on a Unix
# socket in a private directory (no TCP port), stopped and removed when the run ends. The tests
# find it through CLAWBACK_TEST_PG_URL; without it each test process starts its own.
pg_bin=""
for d in "${PG_BIN:-}" $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
  if [ -n "$d" ] && [ -x "$d/initdb" ]; then pg_bin="$d"; break; fi
done
if [ -z "$pg_bin" ] && command -v initdb >/dev/null 2>&1; then pg_bin="$(dirname "$(command -v initdb)")"; fi
if [ -z "$pg_bin" ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
    || echo "warning: could not install PostgreSQL (the PostgreSQL store tests will fail)"
  pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r | head -1)"
fi
if [ -n "$pg_bin" ] && [ -x "$pg_bin/initdb" ]; then
  # The server refuses to run as root: run it as the distribution's postgres account, in a
  # directory that account can reach (a 0700 /tmp is not one).
  pg_run=()
  pg_parent="${TMPDIR:-/tmp}"
  if [ "$(id -u)" = 0 ]; then
    pg_run=(setpriv --reuid=postgres --regid=postgres --init-groups)
    pg_parent=/var/tmp
  fi
  # A fresh directory per attempt: an initdb that failed (seen once: "Permission denied" on
  # the new directory) is tried again in a new one rather than failing the whole run.
  for pg_try in 1 2 3; do
    pg_dir="$(mktemp -d "$pg_parent/clawback-ci-pg.XXXXXX")"
    chmod 0755 "$pg_dir"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$pg_dir"
    if "${pg_run[@]}" "$pg_bin/initdb" -A trust -U postgres -E UTF8 --no-sync -D "$pg_dir/data" >"$pg_dir/initdb.log" 2>&1; then
      break
    fi
    echo "warning: initdb in $pg_dir failed (attempt $pg_try): $(tail -n 3 "$pg_dir/initdb.log")"
    rm -rf "$pg_dir"
    sleep 1
  done
  "${pg_run[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w \
    -o "-k $pg_dir -p 5432 -c listen_addresses='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=500" \
    start >/dev/null
  ci_pg_stop() {
    "${pg_run[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$pg_dir"
  }
  trap ci_pg_stop EXIT
  export CLAWBACK_TEST_PG_URL="host=$pg_dir port=5432 user=postgres dbname=postgres"
  echo "PostgreSQL for the store tests: $("$pg_bin/postgres" --version), at $pg_dir"
fi
