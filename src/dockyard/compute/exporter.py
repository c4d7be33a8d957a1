"""The agent's /metrics endpoint: HTTPS with the host's certificate, a bearer scrape token.

    GET /metrics  Authorization: Bearer <monitoring token>
      token       its SHA-256 must be one the server listed (GET /v1/agent/monitoring,
                  kept in STATE/monitoring.json so a restarted agent serves before the
                  server answers); no token known yet: every scrape is refused (401)
      body        Exporter.collect: the Sampler's last Snapshot, the kernel-log counters
                  and any ``extra`` collectors (item 6's drift), rendered by prometheus-client

TLS: ``--metrics-cert``/``--metrics-key``, else STATE/metrics.pem and metrics.key when
present; without a certificate it serves plain HTTP (the one-host test cloud).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from dockyard import __version__
from dockyard.compute.metrics import HostSample, InstanceSample, Sampler, Snapshot

log = logging.getLogger("dockyard.agent")
INSTANCE_LABELS = ["instance_id", "name", "project", "host", "az"]
HOST_LABELS = ["host", "az"]


class _Families:
    """Metric families by name, made on first use, yielded in order of first use."""

    def __init__(self) -> None:
        self.by_name: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}

    def gauge(self, name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
        found = self.by_name.get(name)
        if found is None:
            found = self.by_name[name] = GaugeMetricFamily(name, doc, labels=labels)
        assert isinstance(found, GaugeMetricFamily)
        return found

    def counter(self, name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
        key = name + "_total"
        found = self.by_name.get(key)
        if found is None:
            found = self.by_name[key] = CounterMetricFamily(name, doc, labels=labels)
        assert isinstance(found, CounterMetricFamily)
        return found


class Exporter(Collector):
    """A prometheus-client collector over what the agent sampled last."""

    def __init__(
        self,
        host: str,
        az: str,
        snapshot: Callable[[], Snapshot],
        kernel_events: Callable[[], dict[str, int]],
    ) -> None:
        self.host, self.az = host, az
        self.snapshot, self.kernel_events = snapshot, kernel_events
        # item 6 (consistency checks) adds its collectors here, e.g. dockyard_instance_drift
        self.extra: list[Collector] = []

    def collect(self) -> Iterable[Metric]:
        snap = self.snapshot()
        f = _Families()
        for inst in snap.instances:
            _instance(f, [inst.id, inst.name, inst.project, self.host, self.az], inst)
        _host(f, [self.host, self.az], snap.host, self.kernel_events())
        yield from f.by_name.values()
        for extra in self.extra:
            yield from extra.collect()


def _instance(f: _Families, lv: list[str], inst: InstanceSample) -> None:
    g, c, il = f.gauge, f.counter, INSTANCE_LABELS
    g("dockyard_instance_running", "1 when the container runs", il).add_metric(
        lv, float(inst.running)
    )
    g("dockyard_instance_should_run", "1 when the desired power state is running", il).add_metric(
        lv, float(inst.should_run)
    )
    fig = inst.figures
    if fig is None:
        return
    g("dockyard_instance_uptime_seconds", "since the container started", il).add_metric(
        lv, inst.uptime
    )
    cpu = c("dockyard_instance_cpu_seconds", "CPU time", [*il, "mode"])
    cpu.add_metric([*lv, "user"], fig.cpu_user)
    cpu.add_metric([*lv, "system"], fig.cpu_system)
    c("dockyard_instance_cpu_periods", "CFS periods", il).add_metric(lv, fig.periods)
    c("dockyard_instance_cpu_throttled_periods", "CFS periods throttled", il).add_metric(
        lv, fig.throttled_periods
    )
    c("dockyard_instance_cpu_throttled_seconds", "time throttled", il).add_metric(
        lv, fig.throttled_seconds
    )
    g("dockyard_instance_cpu_limit_cores", "cores the instance may use", il).add_metric(
        lv, fig.cpu_limit_cores
    )
    _memory(f, lv, inst)
    _disks_and_network(f, lv, inst)
    _load_and_processes(f, lv, inst)


def _memory(f: _Families, lv: list[str], inst: InstanceSample) -> None:
    g, il, fig = f.gauge, INSTANCE_LABELS, inst.figures
    assert fig is not None
    for name, doc, value in (
        ("working_set", "usage minus inactive file cache", fig.memory_working_set),
        ("usage", "cgroup memory usage", fig.memory_usage),
        ("cache", "page cache (memory.stat)", fig.memory_cache),
        ("rss", "anonymous memory (memory.stat)", fig.memory_rss),
        ("swap", "swap used (memory.stat)", fig.memory_swap),
    ):
        g(f"dockyard_instance_memory_{name}_bytes", doc, il).add_metric(lv, value)
    if fig.memory_limit is not None:
        g("dockyard_instance_memory_limit_bytes", "cgroup memory limit", il).add_metric(
            lv, fig.memory_limit
        )
    f.counter("dockyard_instance_oom_kills", "OOM kills in the instance", il).add_metric(
        lv, fig.oom_kills
    )
    g("dockyard_instance_pids", "tasks now", il).add_metric(lv, fig.pids)
    if fig.pids_limit is not None:
        g("dockyard_instance_pids_limit", "pids.max", il).add_metric(lv, fig.pids_limit)
    f.counter("dockyard_instance_pids_refused", "forks refused at pids.max", il).add_metric(
        lv, fig.pids_refused
    )


def _disks_and_network(f: _Families, lv: list[str], inst: InstanceSample) -> None:
    c, il, fig = f.counter, INSTANCE_LABELS, inst.figures
    assert fig is not None
    dl = [*il, "device"]
    for d in fig.disks:
        dv = [*lv, d.device]
        c("dockyard_instance_disk_read_bytes", "bytes read", dl).add_metric(dv, d.read_bytes)
        c("dockyard_instance_disk_written_bytes", "bytes written", dl).add_metric(dv, d.write_bytes)
        c("dockyard_instance_disk_reads", "read requests", dl).add_metric(dv, d.reads)
        c("dockyard_instance_disk_writes", "write requests", dl).add_metric(dv, d.writes)
    for key, value in (inst.network or {}).items():
        doc = f"{key.replace('_', ' ')} at the host end of the veth, seen from the instance"
        c(f"dockyard_instance_network_{key}", doc, il).add_metric(lv, value)


def _load_and_processes(f: _Families, lv: list[str], inst: InstanceSample) -> None:
    g, il = f.gauge, INSTANCE_LABELS
    if inst.load is not None:
        for minutes, value in zip((1, 5, 15), inst.load, strict=True):
            g(f"dockyard_instance_load{minutes}", "the /proc view's load average", il).add_metric(
                lv, value
            )
    pl = [*il, "process"]
    for name, state in sorted(inst.processes.items()):
        g("dockyard_instance_process_up", "a key process is RUNNING in supervisord", pl).add_metric(
            [*lv, name], float(state.up)
        )
        f.counter(
            "dockyard_instance_process_restarts", "a key process's restarts seen", pl
        ).add_metric([*lv, name], state.restarts)


def _host(f: _Families, lv: list[str], h: HostSample, kernel: dict[str, int]) -> None:
    g, hl = f.gauge, HOST_LABELS
    for name, doc, value in (
        ("dockyard_host_vcpus", "shared vCPUs the host offers", h.vcpus),
        ("dockyard_host_vcpus_allocated", "vCPUs of shared instances here", h.vcpus_allocated),
        ("dockyard_host_cores", "cores for instances", h.cores),
        ("dockyard_host_cores_allocated", "cores pinned to dedicated instances", h.cores_allocated),
        ("dockyard_host_memory_bytes", "memory for instances", h.memory_bytes),
        (
            "dockyard_host_memory_allocated_bytes",
            "memory of instances here",
            h.memory_allocated_bytes,
        ),
        ("dockyard_host_disk_bytes", "disk for instances", h.disk_bytes),
        ("dockyard_host_disk_allocated_bytes", "disk of instances here", h.disk_allocated_bytes),
        ("dockyard_host_tasks", "tasks on the host", h.tasks),
        ("dockyard_host_pid_max", "kernel.pid_max", h.pid_max),
        ("dockyard_dockerd_up", "1 when dockerd answers", float(h.dockerd_up)),
    ):
        g(name, doc, hl).add_metric(lv, value)
    if h.conntrack_entries is not None and h.conntrack_max is not None:
        g("dockyard_host_conntrack_entries", "nf_conntrack_count", hl).add_metric(
            lv, h.conntrack_entries
        )
        g("dockyard_host_conntrack_max", "nf_conntrack_max", hl).add_metric(lv, h.conntrack_max)
    events = f.counter("dockyard_host_kernel_events", "kernel-log events by class", [*hl, "class"])
    for cls, n in sorted(kernel.items()):
        events.add_metric([*lv, cls], n)
    if h.dockerd_version:
        g("dockyard_dockerd_info", "dockerd's version", [*hl, "version"]).add_metric(
            [*lv, h.dockerd_version], 1
        )
    g("dockyard_agent_info", "the agent's version", [*hl, "version"]).add_metric(
        [*lv, __version__], 1
    )


class TokenCheck:
    """Which scrape tokens are good: the SHA-256 hex of each, as the server lists them."""

    def __init__(self, hashes: Iterable[str] = ()) -> None:
        self.hashes = frozenset(hashes)

    def allows(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        digest = hashlib.sha256(token.strip().encode()).hexdigest()
        return any(hmac.compare_digest(digest, h) for h in self.hashes)


class MetricsServer:
    """``ThreadingHTTPServer`` on ``listen``; TLS handshakes run in the request threads."""

    def __init__(
        self,
        listen: tuple[str, int],
        exporter: Exporter,
        tokens: Callable[[], TokenCheck],
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(exporter)
        self.httpd = ThreadingHTTPServer(listen, _handler(registry, tokens))
        self.httpd.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self.httpd.socket = context.wrap_socket(
                self.httpd.socket, server_side=True, do_handshake_on_connect=False
            )
            self.scheme = "https"

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> None:
        threading.Thread(target=self.httpd.serve_forever, daemon=True, name="metrics").start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler(registry: CollectorRegistry, tokens: Callable[[], TokenCheck]) -> type[Any]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # an idle or half-open connection (and its TLS handshake) ends
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path.split("?")[0] != "/metrics":
                return self._answer(404, b"only /metrics is here\n", "text/plain")
            if not tokens().allows(self.headers.get("Authorization", "")):
                return self._answer(
                    401, b"send 'Authorization: Bearer <monitoring token>'\n", "text/plain"
                )
            self._answer(200, generate_latest(registry), CONTENT_TYPE_LATEST)

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if status == 401:
                self.send_header("WWW-Authenticate", "Bearer")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # a scrape every 15 s is not news

    return Handler


@dataclass
class Endpoint:
    """What the agent loop needs of its /metrics: the sampler, the URL it advertises (host
    label ``dockyard.metrics``, read by the server's http_sd) and the scrape tokens."""

    sampler: Sampler
    url: str
    state_file: Path  # STATE/monitoring.json: the token hashes the server listed last
    tokens: TokenCheck = field(default_factory=TokenCheck)

    def load(self) -> None:
        try:
            self.tokens = TokenCheck(json.loads(self.state_file.read_text())["scrape_token_sha256"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # none saved yet: scrapes are refused until the server answers

    def set_hashes(self, hashes: list[str]) -> None:
        if frozenset(hashes) == self.tokens.hashes:
            return
        self.tokens = TokenCheck(hashes)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"scrape_token_sha256": sorted(hashes)}) + "\n")
        tmp.replace(self.state_file)
