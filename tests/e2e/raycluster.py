"""Start a Ray cluster of two raylets on this machine (head with dashboard + one worker node),
print its addresses as JSON on the first line of stdout, run until SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from ray.cluster_utils import Cluster


def main() -> None:
    dash_port, agent1, agent2 = (int(a) for a in sys.argv[1:4])
    # two raylets on one host: each dashboard agent needs a port of its own
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": dash_port,
        "dashboard_agent_listen_port": agent1, "object_store_memory": 128 << 20})
    cluster.add_node(num_cpus=2, object_store_memory=128 << 20, dashboard_agent_listen_port=agent2)
    cluster.wait_for_nodes()
    print(json.dumps({"gcs": cluster.address, "dashboard": f"http://127.0.0.1:{dash_port}",
                      "nodes": len(cluster.list_all_nodes())}), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    cluster.shutdown()


if __name__ == "__main__":
    main()
