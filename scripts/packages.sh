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
# PostgreSQL) behind our back: we start what we use and stop it again.
install_debs() {
  export DEBIAN_FRONTEND=noninteractive
  local added_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    added_policy=1
  fi
  apt-get update -q
  local rc=0
  apt-get install -y -q --no-install-recommends "${DOCKYARD_DEBS[@]}" "$@" || rc=$?
  if [ -n "$added_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
  return $rc
}

# .venv with Dockyard installed (editable); $1 is an extra such as "[test]".
make_venv() {
  local extras="${1:-}"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".${extras}"
}

# The commands on root's PATH, so the README's commands work without .venv/bin/.
link_commands() {
  local cmd
  for cmd in dockyard dockyard-server dockyard-agent; do
    ln -sfn "$PWD/.venv/bin/$cmd" "/usr/local/bin/$cmd"
  done
}
