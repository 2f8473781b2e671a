package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/sigilhq/sigil/agent"
	"github.com/sigilhq/sigil/agent/agentconfig"
	"github.com/sigilhq/sigil/agent/cache"
	"github.com/sigilhq/sigil/agent/nodeattest"
	"github.com/sigilhq/sigil/agent/socketlimit"
	"github.com/sigilhq/sigil/internal/health"
	"github.com/sigilhq/sigil/internal/pemfile"
	"github.com/sigilhq/sigil/sds"
)

func newAgentRunCmd() *cobra.Command {
	var configPath, joinToken string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the node agent: attest, keep SVIDs fresh, serve the Workload API",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := agentconfig.Load(configPath)
			if err != nil {
				return err
			}
			if joinToken != "" {
				if cfg.X509PoP != nil {
					return usageErrorf("--join-token: the config attests by x509pop; remove x509pop from it to attest by join token")
				}
				if cfg.K8sPSAT != nil {
					return usageErrorf("--join-token: the config attests by k8s_psat; remove k8s_psat from it to attest by join token")
				}
				cfg.JoinToken = joinToken
			}
			logger, reg := newLogger(cmd), newRegistry()
			if os.Getenv("GOGC") == "" {
				debug.SetGCPercent(cfg.GCPercent)
			}
			a, err := buildAgent(cmd.Context(), cfg, logger, reg)
			if err != nil {
				return err
			}
			runs, err := withHealth(health.Config{Address: cfg.HealthAddress, Ready: a.Ready, Gatherer: reg, PProf: cfg.PProf, Logger: logger}, a.Run)
			if err != nil {
				return err
			}
			return runAll(cmd.Context(), runs...)
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "agent.yaml", "agent configuration file (YAML)")
	cmd.Flags().StringVar(&joinToken, "join-token", "", "join token (from sigil token create) to attest with; overrides join_token in the config; a token works once")
	return cmd
}

// buildAgent wires an agent from its configuration: the trust bundle file,
// the node attestor, workload keys, the workload attestors (unix, and k8s
// when configured) and the Workload API on the socket. mods adjust the
// result before it is built (`sigil dev` sets BootstrapBundle from its
// in-process CA).
func buildAgent(_ context.Context, cfg agentconfig.Config, logger *slog.Logger, reg prometheus.Registerer, mods ...func(*agent.Config)) (*agent.Agent, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	ac := agent.Config{
		TrustDomain:     cfg.TrustDomain,
		ServerAddresses: cfg.ServerAddresses,
		DataDir:         cfg.DataDir,
		SVIDDir:         cfg.SVIDDir,
		Metrics:         reg,
		Logger:          logger,
	}
	if cfg.TrustBundleFile != "" {
		roots, err := pemfile.ReadCerts(cfg.TrustBundleFile)
		if err != nil {
			return nil, fmt.Errorf("trust bundle: %w", err)
		}
		ac.BootstrapBundle = roots
	}
	switch {
	case cfg.JoinToken != "":
		ac.Attestor = nodeattest.JoinToken{Token: cfg.JoinToken}
	case cfg.X509PoP != nil:
		x, err := nodeattest.LoadX509PoP(cfg.X509PoP.CertFile, cfg.X509PoP.KeyFile)
		if err != nil {
			return nil, err
		}
		ac.Attestor = x
	case cfg.K8sPSAT != nil:
		ac.Attestor = nodeattest.K8sPSAT{Cluster: cfg.K8sPSAT.Cluster, TokenPath: cfg.K8sPSAT.TokenPath}
	}
	newKey, err := workloadKeys(cfg.WorkloadKeyType)
	if err != nil {
		return nil, err
	}
	ac.NewWorkloadKey = newKey

	att, runAttestor, err := workloadAttestor(cfg, logger, reg)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(cfg.SocketPath), 0o755); err != nil {
		return nil, fmt.Errorf("socket dir: %w", err)
	}
	if fi, err := os.Stat(filepath.Dir(cfg.SocketPath)); err == nil && fi.Mode().Perm()&0o001 == 0 {
		logger.Warn("other users cannot reach the Workload API socket through its directory; workloads of other uids will fail to connect",
			"socket", cfg.SocketPath, "dir_mode", fi.Mode().Perm().String())
	}
	lim, err := socketlimit.New(socketlimit.Config{
		StreamsPerUID: cfg.Limits.MaxStreamsPerUID, Streams: cfg.Limits.MaxStreams,
		ConnsPerUID: cfg.Limits.MaxConnectionsPerUID, Conns: cfg.Limits.MaxConnections,
		JWTSVIDRate: float64(cfg.Limits.JWTSVIDsPerSecond), JWTSVIDBurst: cfg.Limits.JWTSVIDBurst,
		Logger: logger, Metrics: reg,
	})
	if err != nil {
		return nil, err
	}
	pending := func(c *sds.Config) { c.PendingTimeout = cfg.Limits.SDSPendingTimeout }
	ac.Serve = serveBeside(agent.ServeSocket(agent.SocketConfig{
		Path: cfg.SocketPath, Attestor: att, Metrics: reg, Logger: logger, Limiter: lim,
		Register: []func(*grpc.Server, *cache.Cache) error{agent.SDS(att, logger.With("component", "sds"), reg, pending)},
	}), runAttestor)
	for _, m := range mods {
		m(&ac)
	}
	return agent.New(ac)
}

func workloadKeys(kt agentconfig.KeyType) (func() (crypto.Signer, error), error) {
	switch kt {
	case agentconfig.KeyECP256, "":
		return func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }, nil
	case agentconfig.KeyECP384:
		return func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P384(), rand.Reader) }, nil
	case agentconfig.KeyRSA2048:
		return func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, 2048) }, nil
	}
	return nil, errors.New("unknown workload key type " + string(kt))
}
