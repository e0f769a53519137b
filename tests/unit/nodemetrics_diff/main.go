// nodemetricsdiff evaluates kwok's node-metrics CEL expressions with kwok v0.8.0's own
// environment (sigs.k8s.io/kwok/pkg/kwok/metrics), for tests/unit/test_nodemetrics_diff.py.
// Usage callbacks are deterministic functions of their arguments, mirrored by the test.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/kwok/pkg/kwok/metrics"
)

type testCase struct {
	Expr      string            `json:"expr"`
	As        string            `json:"as"`
	Node      *corev1.Node      `json:"node"`
	Pod       *corev1.Pod       `json:"pod"`
	Container *corev1.Container `json:"container"`
}

type result struct {
	Out any    `json:"out"`
	Err string `json:"err"`
}

func usage(res, ns, pod, ctr string) float64 {
	return float64(len(res)*1000 + len(ns)*100 + len(pod)*10 + len(ctr))
}

func main() {
	var in struct {
		Cases []testCase `json:"cases"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var cur *corev1.Pod
	env, err := metrics.NewEnvironment(metrics.EnvironmentConfig{
		Now:                    func() time.Time { return time.Unix(1000000, 0) },
		StartedContainersTotal: func(node string) int64 { return int64(len(node)) },
		ContainerResourceUsage: usage,
		PodResourceUsage: func(res, ns, pod string) float64 {
			return usage(res, ns, pod, "") + 0.5
		},
		NodeResourceUsage: func(res, node string) float64 {
			return usage(res, "", node, "") + 0.25
		},
		ContainerResourceCumulativeUsage: func(res, ns, pod, ctr string) float64 {
			return 2 * usage(res, ns, pod, ctr)
		},
		PodResourceCumulativeUsage: func(res, ns, pod string) float64 {
			sum := 0.0
			for _, c := range cur.Spec.Containers {
				sum += 2 * usage(res, ns, pod, c.Name)
			}
			return sum
		},
		NodeResourceCumulativeUsage: func(res, node string) float64 {
			return 3 * (usage(res, "", node, "") + 0.25)
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx := context.Background()
	out := make([]result, 0, len(in.Cases))
	for _, c := range in.Cases {
		cur = c.Pod
		ev, err := env.Compile(c.Expr)
		if err != nil {
			out = append(out, result{Err: "compile: " + err.Error()})
			continue
		}
		data := metrics.Data{Node: c.Node, Pod: c.Pod, Container: c.Container}
		var v any
		if c.As == "string" {
			v, err = ev.EvaluateString(ctx, data)
		} else {
			v, err = ev.EvaluateFloat64(ctx, data)
		}
		if err != nil {
			out = append(out, result{Err: err.Error()})
			continue
		}
		out = append(out, result{Out: v})
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
}
