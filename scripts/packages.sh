# Debian packages Dockyard needs on a host, and the steps shared by scripts/setup
# and scripts/test (sourced by both).
DOCKYARD_DEBS=(
  docker.io        # dockerd, containerd, runc
  busybox-static   # the demo and test image
  iproute2         # bridges, veth
  arping           # gratuitous ARP after plumbing
  nftables         # nft: per-port anti-spoofing (table bridge dockyard)
  iptables         # lets Dockyard bridges' traffic through FORWARD when br_netfilter is on
  util-linux       # nsenter; losetup, mount for named volumes
  iputils-ping     # tests ping instances from a probe namespace
  iperf3           # tests and bench measure network limits
  xfsprogs         # the root disk quota test (overlay2 on XFS with pquota, on a loop device)
  e2fsprogs        # named volumes: mkfs.ext4 on each volume's image file
  file
  mmdebstrap       # `dockyard image build-base`: Debian machine-container images
  git              # build hosts (dockyard-agent --builds) clone the commit they build
  docker-registry  # Docker Distribution: the registry images are pushed to and pulled from by digest
  python3-venv     # the virtual environment Dockyard runs from
  prometheus       # `dockyard up --monitoring`: time series and alert rules (and promtool, the tests' rule checks)
  prometheus-alertmanager  # `dockyard up --monitoring`: alert routing, inhibition (and amtool)
)
# only the tests and bench/ use these: ssh into instances, lxcfs to compare /proc views,
# PostgreSQL for the database tests, Alertmanager (and amtool) for the alert delivery tests,
# prometheus (and its promtool) to scrape and lint /metrics
DOCKYARD_TEST_DEBS=(openssh-client lxcfs postgresql prometheus-alertmanager prometheus)

# Install packages without letting their maintainer scripts start services (lxcfs,
# PostgreSQL, Prometheus, Alertmanager) behind our back: we start what we use and stop
# it again. Then disable the daemons Debian's packages enabled that Dockyard runs its own
# instances of (disable_debian_daemons).
install_debs() {
  export DEBIAN_FRONTEND=noninteractive
  local policy="${DOCKYARD_POLICY_RC_D:-/usr/sbin/policy-rc.d}" added_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy"
    added_policy=1
  fi
  apt-get update -q
  local rc=0
  apt-get install -y -q --no-install-recommends "${DOCKYARD_DEBS[@]}" "$@" || rc=$?
  if [ -n "$added_policy" ]; then rm -f "$policy"; fi
  disable_debian_daemons
  return $rc
}

# Debian's prometheus and prometheus-alertmanager enable their own services when
# installed: a Prometheus on :9090 scraping localhost and an Alertmanager on :9093,
# started at once (unless policy-rc.d forbids it, as install_debs does) and at every
# boot. Dockyard runs its own (`dockyard up
# --monitoring`: data under the state dir, ports beside the API's), so Debian's are
# stopped if running and disabled: with systemd running `systemctl disable --now`;
# without it, the units are disabled offline (systemctl, or deb-systemd-helper when
# there is no systemctl) and the sysvinit scripts stopped and disabled (update-rc.d).
# A disabled unit is not started again by a package upgrade (deb-systemd-invoke
# skips disabled units). Paths can be moved for the tests (tests/unit/test_packages_sh.py).
DEBIAN_DAEMONS=(prometheus prometheus-alertmanager)
disable_debian_daemons() {
  local units="${DOCKYARD_UNIT_DIR:-/lib/systemd/system}" initd="${DOCKYARD_INITD:-/etc/init.d}"
  local booted="${DOCKYARD_SYSTEMD_RUN:-/run/systemd/system}" name
  for name in "${DEBIAN_DAEMONS[@]}"; do
    if [ -e "$units/$name.service" ]; then
      if [ -d "$booted" ] && command -v systemctl >/dev/null; then
        systemctl disable --now "$name.service" || true
      elif command -v systemctl >/dev/null; then
        systemctl disable "$name.service" || true
      elif command -v deb-systemd-helper >/dev/null; then
        deb-systemd-helper disable "$name.service" || true
      fi
    fi
    if [ -x "$initd/$name" ]; then
      if [ ! -d "$booted" ] && "$initd/$name" status >/dev/null 2>&1; then
        "$initd/$name" stop || true
      fi
      if command -v update-rc.d >/dev/null; then update-rc.d "$name" disable || true; fi
    fi
  done
}

# The interpreter .venv is made from: DOCKYARD_PYTHON if set, else Debian's python3
# (python3-venv above brings it) when it is 3.11 or newer, else the first python3 on
# PATH. Debian's python3 is linked statically and built with PGO and LTO (its
# changelog); one built from source without them (pyenv's default: a shared libpython,
# -O3 only) took 15-40 % longer for CLI commands and up to 40 % for server requests here
# (bench/cli_startup.py, bench/request_cpu.py; figures in the README).
venv_python() {
  if [ -n "${DOCKYARD_PYTHON:-}" ]; then
    echo "$DOCKYARD_PYTHON"
  elif /usr/bin/python3 -c 'import ensurepip, sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo /usr/bin/python3
  else
    command -v python3
  fi
}

# .venv with Dockyard installed (editable); $1 is an extra such as "[test]". An
# existing .venv is kept, whatever it was made from.
make_venv() {
  local extras="${1:-}"
  [ -x .venv/bin/python ] || "$(venv_python)" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".${extras}"
  # bytecode now, as pip writes it for a regular install: an editable one gets it
  # only when Python may write it (not under PYTHONDONTWRITEBYTECODE, not on a
  # read-only tree), and without it every CLI command compiles what it imports
  # (13 of its ~60 ms of CPU)
  .venv/bin/python -m compileall -q src/dockyard >/dev/null \
    || echo "note: could not byte-compile src/dockyard (a read-only tree?); it still runs" >&2
}

# The commands on root's PATH, so the README's commands work without .venv/bin/.
link_commands() {
  local cmd
  for cmd in dockyard dockyard-server dockyard-agent; do
    ln -sfn "$PWD/.venv/bin/$cmd" "/usr/local/bin/$cmd"
  done
}
