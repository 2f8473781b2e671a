package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sigilhq/sigil/agent"
	"github.com/sigilhq/sigil/agent/agentconfig"
	"github.com/sigilhq/sigil/authz"
	"github.com/sigilhq/sigil/ca/caconfig"
	"github.com/sigilhq/sigil/ca/server"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/health"
)

// Default local addresses of `sigil dev`.
const (
	devServerAddress = "127.0.0.1:8443"
	devHealthAddress = "127.0.0.1:9988"
)

func newDevCmd() *cobra.Command {
	var dir, trustDomain, serverAddress, healthAddress, authzAddress string
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run CA, agent and authz on this machine with an embedded store",
		Long: `Run Sigil on one machine: a CA with a self-signed root and the embedded
SQLite store under --dir, its admin socket at DIR/admin.sock. Running it again
resumes with the same root and entries. Ctrl-C stops it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			started := time.Now()
			// The directory is traversable by every user so that workloads
			// of any uid reach DIR/agent.sock; what is secret in it (keys,
			// database, admin socket, agent identity) is 0600/0700 itself.
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("dev dir: %w", err)
			}
			if err := os.Chmod(dir, 0o755); err != nil {
				return fmt.Errorf("dev dir: %w", err)
			}
			unlock, err := lockDir(dir)
			if err != nil {
				return err
			}
			defer unlock()
			cfg, err := caconfig.File{
				TrustDomain:   trustDomain,
				DataDir:       dir,
				ServerAddress: serverAddress,
			}.Validate()
			if err != nil {
				return err
			}
			logger, reg := newLogger(cmd), newRegistry()
			ctx := cmd.Context()
			// Listen first, so that busy ports are said at once and the
			// addresses printed are the ones bound (a port 0 chosen).
			var listeners []net.Listener // closed here unless the runs own them
			running := false
			defer func() {
				for _, l := range listeners {
					if !running {
						l.Close()
					}
				}
			}()
			listen := func(what, addr string, listen func(string) (net.Listener, error)) (net.Listener, error) {
				l, err := listen(addr)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", what, err)
				}
				listeners = append(listeners, l)
				return l, nil
			}
			tcp := func(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }
			lis, err := listen("ca server", serverAddress, tcp)
			if err != nil {
				return err
			}
			hlis, err := listen("health", healthAddress, tcp)
			if err != nil {
				return err
			}
			alis, err := listen("authz", authzAddress, authz.Listen)
			if err != nil {
				return err
			}
			stack, err := buildCA(ctx, cfg, logger, reg, func(c *server.Config) { c.ServerListener = lis })
			if err != nil {
				return err
			}
			defer stack.Close()
			devAgent, err := newDevAgent(ctx, stack, dir, lis.Addr().String(), logger.With("component", "agent"), reg)
			if err != nil {
				return err
			}
			authzSvc, err := devAuthz(dir, cfg.TrustDomain, alis, logger, reg)
			if err != nil {
				return err
			}
			// One health endpoint for the three: ready when all are.
			ready := func(ctx context.Context) error {
				var errs []error
				for _, c := range []struct {
					name  string
					ready func(context.Context) error
				}{{"ca", stack.CA.Ready}, {"agent", devAgent.Ready}, {"authz", authzSvc.Ready}} {
					if err := c.ready(ctx); err != nil {
						errs = append(errs, fmt.Errorf("%s: %w", c.name, err))
					}
				}
				return errors.Join(errs...)
			}
			runs, err := withHealth(health.Config{Listener: hlis, Ready: ready, Gatherer: reg, Logger: logger}, stack.Run, authzSvc.Run, devAgent.Run)
			if err != nil {
				return err
			}
			ctx, stop := context.WithCancel(ctx)
			defer stop()
			done := make(chan error, 1)
			running = true
			go func() { done <- runAll(ctx, runs...) }()
			agentID, err := adoptDevAgent(ctx, stack.Store, dir, devAgent)
			if err == nil {
				err = ensureDevAuthzEntry(ctx, stack.Store, cfg.TrustDomain, agentID)
			}
			if err != nil {
				interrupted := ctx.Err() != nil // Ctrl-C during start-up
				stop()
				<-done
				if interrupted && errors.Is(err, context.Canceled) {
					logger.Info("sigil dev stopped", "during", "start-up")
					return nil
				}
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Sigil dev is running (started in %s).\n", time.Since(started).Round(time.Millisecond))
			fmt.Fprintf(out, "  trust domain   %s\n", cfg.TrustDomain.Name())
			fmt.Fprintf(out, "  state          %s\n", dir)
			fmt.Fprintf(out, "  admin socket   %s\n", cfg.AdminSocket)
			fmt.Fprintf(out, "  ca server      %s (mTLS)\n", lis.Addr())
			fmt.Fprintf(out, "  agent          %s\n", agentID)
			fmt.Fprintf(out, "  agent socket   %s (SPIFFE Workload API + Envoy SDS)\n", filepath.Join(dir, "agent.sock"))
			fmt.Fprintf(out, "  authz          %s (Envoy ext_authz v3), policies in %s, decision log %s\n", alis.Addr(), filepath.Join(dir, "policies"), filepath.Join(dir, "decisions.log"))
			fmt.Fprintf(out, "  health         http://%s/live  /ready  /metrics (ca, agent and authz)\n", hlis.Addr())
			fmt.Fprintf(out, "Try:\n  sigil entry create --spiffe-id spiffe://%s/me --selector unix:uid:%d\n  sigil svid fetch\n  sigil bundle show\nCtrl-C stops.\n",
				cfg.TrustDomain.Name(), os.Getuid())
			err = <-done
			logger.Info("sigil dev stopped")
			return err
		},
	}
	home, _ := os.UserHomeDir()
	cmd.Flags().StringVar(&dir, "dir", filepath.Join(home, ".sigil", "dev"), "directory holding the dev state")
	cmd.Flags().StringVar(&trustDomain, "trust-domain", "example.org", "trust domain")
	cmd.Flags().StringVar(&serverAddress, "server-address", devServerAddress, "CA server (mTLS) address")
	cmd.Flags().StringVar(&healthAddress, "health-address", devHealthAddress, "health and metrics address")
	cmd.Flags().StringVar(&authzAddress, "authz-address", "127.0.0.1:9191", "ext_authz gRPC address")
	return cmd
}

// lockDir takes an exclusive lock on DIR/dev.lock so that a second
// `sigil dev` on the same directory says so instead of fighting the first.
func lockDir(dir string) (func(), error) {
	path := filepath.Join(dir, "dev.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("sigil dev is already running on %s (lock %s is held); stop it first or use another --dir", dir, path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// devAgentIDFile holds the dev agent's SPIFFE ID, the default parent of
// `sigil entry create` on a dev admin socket in the same directory.
const devAgentIDFile = "agent-id"

// newDevAgent makes the one dev agent, attested with a join token made here.
// A restart that finds a valid persisted agent identity does not use it.
func newDevAgent(ctx context.Context, stack *caStack, dir, serverAddr string, logger *slog.Logger, reg prometheus.Registerer) (*agent.Agent, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	token := hex.EncodeToString(b)
	if err := stack.Store.CreateJoinToken(ctx, "sigil-dev", store.JoinToken{Token: token, ExpiresAt: time.Now().Add(10 * time.Minute)}); err != nil {
		return nil, fmt.Errorf("dev join token: %w", err)
	}
	roots, err := stack.CA.Roots(ctx)
	if err != nil {
		return nil, err
	}
	cfg, err := agentconfig.File{
		TrustDomain:   stack.CA.TrustDomain().Name(),
		ServerAddress: agentconfig.Addresses{serverAddr},
		DataDir:       filepath.Join(dir, "agent"),
		SocketPath:    filepath.Join(dir, "agent.sock"),
		JoinToken:     token,
	}.Validate()
	if err != nil {
		return nil, err
	}
	return buildAgent(ctx, cfg, logger, reg, func(c *agent.Config) { c.BootstrapBundle = roots })
}

// adoptDevAgent waits for the dev agent to attest, and when its ID differs
// from the previous run's (its persisted identity had expired, so it
// attested again with a new token) moves the previous agent's entries to it:
// in dev, entries belong to "the" agent, whatever its current ID.
func adoptDevAgent(ctx context.Context, st store.Entries, dir string, a interface{ ID() (spiffeid.ID, bool) }) (spiffeid.ID, error) {
	deadline := time.Now().Add(30 * time.Second)
	var id spiffeid.ID
	for {
		if got, ok := a.ID(); ok {
			id = got
			break
		}
		if time.Now().After(deadline) {
			return spiffeid.ID{}, errors.New("the dev agent did not attest within 30s")
		}
		select {
		case <-ctx.Done():
			return spiffeid.ID{}, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	path := filepath.Join(dir, devAgentIDFile)
	prev, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return id, err
	}
	if old := strings.TrimSpace(string(prev)); old != "" && old != id.String() {
		entries, err := st.ListEntries(ctx, store.EntryFilter{ParentID: old})
		if err != nil {
			return id, err
		}
		for _, e := range entries {
			e.ParentID = id.String()
			if _, err := st.UpdateEntry(ctx, "sigil-dev", e); err != nil {
				return id, fmt.Errorf("move entry %s to the new dev agent: %w", e.ID, err)
			}
		}
	}
	return id, os.WriteFile(path, []byte(id.String()+"\n"), 0o644)
}

// devParentID is the dev agent's ID when adminSocket is a dev admin socket.
func devParentID(adminSocket string) (string, bool) {
	b, err := os.ReadFile(filepath.Join(filepath.Dir(adminSocket), devAgentIDFile))
	if err != nil {
		return "", false
	}
	id := strings.TrimSpace(string(b))
	return id, id != ""
}
