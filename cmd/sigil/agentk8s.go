package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/sigilhq/sigil/agent"
	"github.com/sigilhq/sigil/agent/agentconfig"
	"github.com/sigilhq/sigil/agent/attest"
	"github.com/sigilhq/sigil/agent/attest/k8s"
	"github.com/sigilhq/sigil/agent/attest/unix"
	"github.com/sigilhq/sigil/agent/cache"
)

// workloadAttestor wires the workload attestors the config asks for: unix
// always, and k8s beside it (its metrics in reg, if not nil). run, if not
// nil, must run while the socket serves (the k8s attestor's pod watch).
func workloadAttestor(cfg agentconfig.Config, logger *slog.Logger, reg prometheus.Registerer) (att attest.Attestor, run func(context.Context) error, err error) {
	u, err := unix.New(unix.Config{Logger: logger})
	if err != nil {
		return nil, nil, err
	}
	if cfg.K8s == nil {
		return u, nil, nil
	}
	var rc *rest.Config
	if cfg.K8s.Kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", cfg.K8s.Kubeconfig)
		if err != nil {
			return nil, nil, fmt.Errorf("workload_attestors.k8s.kubeconfig: %w", err)
		}
	} else {
		rc, err = rest.InClusterConfig()
		if err != nil {
			return nil, nil, fmt.Errorf("workload_attestors.k8s: no kubeconfig set and no in-cluster service account (%w): set kubeconfig or run the agent as a pod", err)
		}
	}
	rc.UserAgent = "sigil-agent"
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, nil, fmt.Errorf("workload_attestors.k8s: %w", err)
	}
	node := cfg.K8s.NodeName
	if node == "" {
		node = os.Getenv("NODE_NAME")
	}
	if node == "" {
		return nil, nil, errors.New("workload_attestors.k8s: node_name is not set and neither is NODE_NAME (set it from the pod's spec.nodeName)")
	}
	ka, err := k8s.New(k8s.Config{
		Client: client, NodeName: node, Wait: cfg.K8s.Wait, ProcDir: cfg.K8s.ProcDir,
		Logger: logger.With("component", "k8s-attestor"), Metrics: reg,
	})
	if err != nil {
		return nil, nil, err
	}
	return attest.Chain{u, ka}, ka.Run, nil
}

// serveBeside runs run for as long as serve serves.
func serveBeside(serve agent.ServeFunc, run func(context.Context) error) agent.ServeFunc {
	if run == nil {
		return serve
	}
	return func(ctx context.Context, c *cache.Cache) error {
		g, ctx := errgroup.WithContext(ctx)
		g.Go(func() error { return run(ctx) })
		g.Go(func() error { return serve(ctx, c) })
		return g.Wait()
	}
}
