"""Node resource metrics as kwok serves them: ``Metric``, ``ResourceUsage`` and
``ClusterResourceUsage`` objects (kwok.x-k8s.io/v1alpha1) turned into the Prometheus
text of ``/metrics/nodes/{nodeName}/metrics/resource`` (kubelet's /metrics/resource).

Pure: objects in, text out; the shard feeds it nodes and pods and serves the text.
"""
