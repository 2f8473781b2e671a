package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/sigilhq/sigil/ca"
	"github.com/sigilhq/sigil/ca/admin"
	"github.com/sigilhq/sigil/ca/caconfig"
	"github.com/sigilhq/sigil/ca/k8sreg"
	"github.com/sigilhq/sigil/ca/keys"
	"github.com/sigilhq/sigil/ca/nodeapi"
	"github.com/sigilhq/sigil/ca/nodeattest"
	"github.com/sigilhq/sigil/ca/oidc"
	"github.com/sigilhq/sigil/ca/server"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/ca/store/sqlstore"
	"github.com/sigilhq/sigil/ca/upstream"
	"github.com/sigilhq/sigil/internal/buildinfo"
	"github.com/sigilhq/sigil/internal/health"
)

func newCACmd() *cobra.Command {
	cmd := &cobra.Command{Use: "ca", Short: "Run and operate the certificate authority"}
	cmd.AddCommand(newCARunCmd())
	addCAOpsCommands(cmd)
	return cmd
}

func newCARunCmd() *cobra.Command {
	var configPath string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the CA server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := caconfig.Load(configPath)
			if err != nil {
				return err
			}
			logger, reg := newLogger(cmd), newRegistry()
			stack, err := buildCA(cmd.Context(), cfg, logger, reg)
			if err != nil {
				return err
			}
			defer stack.Close()
			runs, err := withHealth(health.Config{Address: cfg.HealthAddress, Ready: stack.CA.Ready, Gatherer: reg, PProf: cfg.PProf, Logger: logger}, stack.Run)
			if err != nil {
				return err
			}
			if cfg.ConsoleAddress != "" {
				run, err := caConsole(cmd.Context(), cfg, stack, logger)
				if err != nil {
					return err
				}
				runs = append(runs, run)
			}
			if cfg.OIDC.Address != "" {
				run, err := caOIDC(cfg, stack, logger)
				if err != nil {
					return err
				}
				runs = append(runs, run)
			}
			return runAll(cmd.Context(), runs...)
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "ca.yaml", "CA configuration file (YAML)")
	return cmd
}

// caOIDC serves OIDC discovery for JWT-SVIDs under jwt_issuer: HTTPS with
// the configured certificate, or plain HTTP for a TLS proxy in front.
func caOIDC(cfg caconfig.Config, stack *caStack, logger *slog.Logger) (func(context.Context) error, error) {
	oc := oidc.Config{Issuer: cfg.JWTIssuer, Keys: stack.CA, Address: cfg.OIDC.Address, Logger: logger}
	if cfg.OIDC.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.OIDC.CertFile, cfg.OIDC.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("oidc_discovery: %w", err)
		}
		oc.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	srv, err := oidc.New(oc)
	if err != nil {
		return nil, err
	}
	return srv.Run, nil
}

// newLogger is the logger of a run command, as --log-level and
// --log-format say (checked before any command runs).
func newLogger(cmd *cobra.Command) *slog.Logger {
	lo, err := logOptions(cmd)
	if err != nil {
		lo = logSettings{level: slog.LevelInfo, format: "text"}
	}
	opts := &slog.HandlerOptions{Level: lo.level}
	if lo.format == "json" {
		return slog.New(slog.NewJSONHandler(cmd.ErrOrStderr(), opts))
	}
	return slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), opts))
}

func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildinfo.Read().Collector())
	return reg
}

// caStack is a wired CA: store, keys, upstream, journal and listeners.
type caStack struct {
	CA      *ca.CA
	Store   store.Store
	node    *nodeapi.Server
	admin   *admin.Server
	listen  func(context.Context) error // the store's change relay, if any
	server  *server.Server
	k8sreg  *k8sreg.Reconciler // nil unless kubernetes.cluster is set
	lease   k8sreg.Lease
	fed     *caFederation
	closers []func() error
}

// buildCA chooses the backends the config names and wires them together.
// Each of mods may adjust the listeners' config.
func buildCA(ctx context.Context, cfg caconfig.Config, logger *slog.Logger, reg prometheus.Registerer, mods ...func(*server.Config)) (_ *caStack, err error) {
	s := &caStack{}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	switch cfg.Store.Type {
	case "sqlite":
		st, err := sqlstore.OpenSQLite(ctx, cfg.Store.Path)
		if err != nil {
			return nil, err
		}
		s.Store = st
	case "postgres":
		st, err := sqlstore.OpenPostgres(ctx, cfg.Store.DSN, sqlstore.WithLogger(logger))
		if err != nil {
			return nil, err
		}
		s.Store = st
		s.listen = st.Listen
	default:
		return nil, fmt.Errorf("unknown store type %q", cfg.Store.Type)
	}
	s.closers = append(s.closers, s.Store.Close)

	var km ca.KeyManager
	switch cfg.KeyManager.Type {
	case "disk":
		if km, err = keys.NewDisk(cfg.KeyManager.Dir); err != nil {
			return nil, err
		}
	case "pkcs11":
		p, err := keys.NewPKCS11(ctx, keys.PKCS11Config{URI: cfg.KeyManager.URI})
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, p.Close)
		km = p
	case "memory":
		km = keys.NewMemory()
	default:
		return nil, fmt.Errorf("unknown key manager type %q", cfg.KeyManager.Type)
	}

	var up ca.Upstream
	switch cfg.Upstream.Type {
	case "self_signed":
		if up, err = upstream.NewSelfSigned(ctx, upstream.SelfSignedConfig{
			TrustDomain: cfg.TrustDomain, Keys: km, KeyType: cfg.KeyType, CertPath: cfg.Upstream.CertPath, TTL: cfg.Upstream.RootTTL,
		}); err != nil {
			return nil, err
		}
	case "disk":
		if up, err = upstream.NewDisk(upstream.DiskConfig{CertFile: cfg.Upstream.CertFile, KeyFile: cfg.Upstream.KeyFile, BundleFile: cfg.Upstream.BundleFile}); err != nil {
			return nil, err
		}
	case "step_ca":
		u := cfg.Upstream
		if up, err = upstream.NewStepCA(ctx, upstream.StepCAConfig{
			URL: u.URL, RootFingerprint: u.RootFingerprint, RootFile: u.RootFile, Provisioner: u.Provisioner,
			JWKKeyFile: u.JWKKeyFile, PasswordFile: u.PasswordFile, X5CCertFile: u.X5CCertFile, X5CKeyFile: u.X5CKeyFile,
			Logger: logger, Metrics: reg,
		}); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown upstream type %q", cfg.Upstream.Type)
	}

	authority, err := ca.New(ca.Config{
		TrustDomain: cfg.TrustDomain, InstanceID: cfg.InstanceID, Store: s.Store, Keys: km, Upstream: up,
		KeyType: cfg.KeyType, CATTL: cfg.CATTL, X509SVIDTTL: cfg.X509SVIDTTL, JWTSVIDTTL: cfg.JWTSVIDTTL,
		JWTIssuer: cfg.JWTIssuer, RefreshHint: cfg.RefreshHint, Logger: logger, Metrics: reg,
	})
	if err != nil {
		return nil, err
	}
	if err := authority.Init(ctx); err != nil {
		if errors.Is(err, ca.ErrStateMismatch) {
			return nil, fmt.Errorf("%w\n(data_dir %s, %s)", err, cfg.DataDir, describeState(cfg))
		}
		return nil, err
	}
	s.CA = authority

	if s.fed, err = buildFederation(ctx, cfg, s.Store, authority, logger, reg); err != nil {
		return nil, err
	}
	adminSrv, err := admin.New(admin.Config{TrustDomain: cfg.TrustDomain, Store: s.Store, Authority: authority, Logger: logger,
		Federation: s.fed.refresher, ConfigFederations: s.fed.config})
	if err != nil {
		return nil, err
	}
	s.admin = adminSrv
	jt, err := nodeattest.NewJoinToken(cfg.TrustDomain, s.Store, nil)
	if err != nil {
		return nil, err
	}
	attestors := []nodeattest.Attestor{jt}
	if f := cfg.NodeAttestation.X509PoPRootsFile; f != "" {
		roots, err := nodeattest.LoadRoots(f)
		if err != nil {
			return nil, err
		}
		xp, err := nodeattest.NewX509PoP(nodeattest.X509PoPConfig{TrustDomain: cfg.TrustDomain, Roots: roots})
		if err != nil {
			return nil, err
		}
		attestors = append(attestors, xp)
	}
	if len(cfg.NodeAttestation.K8sPSAT) > 0 {
		kc := nodeattest.K8sPSATConfig{TrustDomain: cfg.TrustDomain}
		for _, c := range cfg.NodeAttestation.K8sPSAT {
			client, err := nodeattest.ClientFor(c.Kubeconfig)
			if err != nil {
				return nil, fmt.Errorf("node_attestation.k8s_psat.clusters.%s: %w", c.Name, err)
			}
			kc.Clusters = append(kc.Clusters, nodeattest.K8sCluster{
				Name: c.Name, Client: client, ServiceAccounts: c.AllowedServiceAccounts, Audience: c.Audience,
			})
		}
		kp, err := nodeattest.NewK8sPSAT(kc)
		if err != nil {
			return nil, err
		}
		attestors = append(attestors, kp)
	}
	if s.node, err = nodeapi.New(nodeapi.Config{
		TrustDomain: cfg.TrustDomain, Store: s.Store, CA: authority, Attestors: attestors,
		AgentSVIDTTL: cfg.NodeAttestation.AgentSVIDTTL, Logger: logger, Metrics: reg,
	}); err != nil {
		return nil, err
	}
	if k := cfg.Kubernetes; k.Cluster != "" {
		if s.k8sreg, s.lease, err = buildK8sReg(cfg, s.Store, logger); err != nil {
			return nil, err
		}
	}
	sc := server.Config{
		AdminSocket: cfg.AdminSocket, ServerAddress: cfg.ServerAddress,
		Services: []server.Registrar{adminSrv, s.node}, Identity: authority, Logger: logger,
	}
	for _, m := range mods {
		m(&sc)
	}
	if s.server, err = server.New(sc); err != nil {
		return nil, err
	}
	return s, nil
}

// describeState names where the store, keys and root of cfg live, for an
// operator who must find out which of them belongs to another CA. It never
// shows a DSN or PKCS#11 URI, which may carry a password or PIN.
func describeState(cfg caconfig.Config) string {
	var parts []string
	if cfg.Store.Type == "sqlite" {
		parts = append(parts, "store "+cfg.Store.Path)
	} else {
		parts = append(parts, "store "+cfg.Store.Type)
	}
	if cfg.KeyManager.Type == "disk" {
		parts = append(parts, "keys "+cfg.KeyManager.Dir)
	} else {
		parts = append(parts, "keys "+cfg.KeyManager.Type)
	}
	if cfg.Upstream.Type == "self_signed" {
		parts = append(parts, "root "+cfg.Upstream.CertPath)
	} else {
		parts = append(parts, "upstream "+cfg.Upstream.Type)
	}
	return strings.Join(parts, ", ")
}

// Run serves and rotates until ctx ends.
func (s *caStack) Run(ctx context.Context) error {
	runs := []func(context.Context) error{func(ctx context.Context) error { return s.CA.Run(ctx, 0) }, s.node.Run, s.server.Run}
	if s.k8sreg != nil {
		runs = append(runs, func(ctx context.Context) error { return s.k8sreg.Run(ctx, s.lease) })
	}
	if s.listen != nil {
		runs = append(runs, s.listen)
	}
	return runAll(ctx, append(runs, s.fed.runs()...)...)
}

// buildK8sReg wires auto-registration of pods: clients from the kubeconfig
// (or the pod's service account), and a Lease identity naming this host
// and CA instance.
func buildK8sReg(cfg caconfig.Config, st store.Store, logger *slog.Logger) (*k8sreg.Reconciler, k8sreg.Lease, error) {
	k := cfg.Kubernetes
	var rc *rest.Config
	var err error
	if k.Kubeconfig == "" {
		rc, err = rest.InClusterConfig()
	} else {
		rc, err = clientcmd.BuildConfigFromFlags("", k.Kubeconfig)
	}
	if err != nil {
		return nil, k8sreg.Lease{}, fmt.Errorf("kubernetes: client config: %w", err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, k8sreg.Lease{}, fmt.Errorf("kubernetes: %w", err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, k8sreg.Lease{}, fmt.Errorf("kubernetes: %w", err)
	}
	r, err := k8sreg.New(k8sreg.Config{
		TrustDomain: cfg.TrustDomain, Cluster: k.Cluster, Client: client, Dynamic: dyn, Store: st,
		NoDefaultIdentity: !k.DefaultIdentity, Logger: logger,
	})
	if err != nil {
		return nil, k8sreg.Lease{}, err
	}
	host, err := os.Hostname()
	if err != nil {
		return nil, k8sreg.Lease{}, fmt.Errorf("kubernetes: lease identity: %w", err)
	}
	return r, k8sreg.Lease{Namespace: k.LeaseNamespace, Name: k.LeaseName, Identity: host + "/" + cfg.InstanceID}, nil
}

// Close releases the store and key manager.
func (s *caStack) Close() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i]())
	}
	s.closers = nil
	return errors.Join(errs...)
}
