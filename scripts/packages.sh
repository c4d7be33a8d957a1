# Debian packages Dockyard needs on a host (sourced by scripts/setup and .ci/run).
DOCKYARD_DEBS=(
  docker.io        # dockerd, containerd, runc
  busybox-static   # the demo and test image
  iproute2         # bridges, veth
  arping           # gratuitous ARP after plumbing
  util-linux       # nsenter
  iputils-ping     # tests ping instances from a probe namespace
  iperf3           # tests and bench measure network limits
  xfsprogs         # the root disk quota test (overlay2 on XFS with pquota, on a loop device)
  file
  mmdebstrap       # `dockyard image build-base`: Debian machine-container images
)
# only the tests and bench/ use these: ssh into instances, lxcfs to compare /proc views
DOCKYARD_TEST_DEBS=(openssh-client lxcfs)

install_debs() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${DOCKYARD_DEBS[@]}" "$@"
}

make_venv() {
  local extras="${1:-}"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".${extras}"
}
