# A PostgreSQL database for the tests (sourced by scripts/test): the first local
# cluster, started if it was not running and stopped again at exit.
_pg_started=""
_pg_cluster=""

start_postgres() {
  _pg_cluster=$(pg_lsclusters -h | awk 'NR==1 {print $1" "$2}')
  if [ -z "$_pg_cluster" ]; then
    local version
    version=$(ls /usr/lib/postgresql | sort -n | tail -1)
    pg_createcluster "$version" main >/dev/null
    _pg_cluster="$version main"
  fi
  if ! pg_lsclusters -h | awk 'NR==1 {exit $4=="online"?0:1}'; then
    pg_ctlcluster $_pg_cluster start
    _pg_started=1
  fi
  su postgres -c "psql -tAc \"SELECT 1 FROM pg_roles WHERE rolname='dockyard_ci'\"" | grep -q 1 ||
    su postgres -c "psql -qc \"CREATE ROLE dockyard_ci LOGIN CREATEDB PASSWORD 'dockyard_ci'\""
  su postgres -c "psql -tAc \"SELECT 1 FROM pg_database WHERE datname='dockyard_ci'\"" | grep -q 1 ||
    su postgres -c "createdb -O dockyard_ci dockyard_ci"
  export DOCKYARD_TEST_PG_URL=postgresql+psycopg://dockyard_ci:dockyard_ci@127.0.0.1/dockyard_ci
}

stop_postgres() {
  if [ -n "$_pg_started" ]; then pg_ctlcluster $_pg_cluster stop || true; fi
}
