"""Prometheus metrics of one shard process (each Ray actor is its own process and registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# seconds a lease renewal left after its due time; the bench report reads the top bucket
LEASE_LAG_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40)


class ShardMetrics:
    def __init__(self, shard: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        lbl = ["shard"]
        self.shard = shard
        self.nodes = Gauge("shardlet_nodes_managed", "Nodes this shard plays kubelet for", lbl, registry=r).labels(shard)
        self.pods = Gauge("shardlet_pods_managed", "Pods on this shard's nodes", lbl, registry=r).labels(shard)
        self._watch_events = Counter("shardlet_watch_events_total", "Watch events received",
                                     ["shard", "resource"], registry=r)
        self._relists = Counter("shardlet_relists_total", "Full relists after a 410 or restart",
                                ["shard", "resource"], registry=r)
        self._transitions = Counter("shardlet_stage_transitions_total", "Stages applied", ["shard", "stage"], registry=r)
        self._task_restarts = Counter("shardlet_task_restarts_total",
                                      "Long-lived loops restarted after an unexpected failure", ["shard", "kind"],
                                      registry=r)
        self._stage_errors = Counter("shardlet_stage_errors_total", "Stages that failed to apply",
                                     ["shard", "stage"], registry=r)
        self.lease_renewals = Counter("shardlet_lease_renewals_total", "Node lease renewals", ["shard", "result"],
                                      registry=r)
        self._renew_ok = self.lease_renewals.labels(shard, "ok")
        self._renew_error = self.lease_renewals.labels(shard, "error")
        self.lease_lag = Histogram("shardlet_lease_renew_lag_seconds", "Renewal time minus due time", lbl,
                                   buckets=LEASE_LAG_BUCKETS,
                                   registry=r).labels(shard)
        self._requests = Counter("shardlet_apiserver_requests_total", "Requests to kube-apiserver",
                                 ["shard", "verb", "code"], registry=r)
        self._latency = Histogram("shardlet_apiserver_request_duration_seconds", "Request latency",
                                  ["shard", "verb"], registry=r)
        self._ev_children: dict[str, Counter] = {}
        for res in ("nodes", "pods"):   # exported as 0 from the start, not only after the first relist
            self._relists.labels(shard, res)
        self._tr_children: dict[str, Counter] = {}
        self._req_children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}

    def watch_event(self, resource: str) -> None:
        c = self._ev_children.get(resource)
        if c is None:
            c = self._ev_children[resource] = self._watch_events.labels(self.shard, resource)
        c.inc()

    def events_by_resource(self) -> dict[str, int]:
        return {r: int(c._value.get()) for r, c in self._ev_children.items()}

    def relist(self, resource: str) -> None:
        self._relists.labels(self.shard, resource).inc()

    def transition(self, stage: str) -> None:
        c = self._tr_children.get(stage)
        if c is None:
            c = self._tr_children[stage] = self._transitions.labels(self.shard, stage)
        c.inc()

    def task_restart(self, kind: str) -> None:
        self._task_restarts.labels(self.shard, kind).inc()

    def stage_error(self, stage: str) -> None:
        self._stage_errors.labels(self.shard, stage).inc()

    def request(self, verb: str, code: int, seconds: float) -> None:
        # children looked up once per label set: labels() per request and this method around it
        # were 3% of a shard's busy samples while it renewed 1,371 leases a second (py-spy)
        pair = self._req_children.get((verb, code))
        if pair is None:
            pair = self._req_children[(verb, code)] = (self._requests.labels(self.shard, verb, str(code)),
                                                      self._latency.labels(self.shard, verb))
        pair[0].inc()
        pair[1].observe(seconds)

    def renew(self, lag: float, ok: bool) -> None:
        (self._renew_ok if ok else self._renew_error).inc()
        if ok:
            self.lease_lag.observe(lag)

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        server, _ = start_http_server(port, addr=addr, registry=self.registry)
        return int(server.server_port)
