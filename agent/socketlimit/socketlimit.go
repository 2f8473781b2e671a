package socketlimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/sigilhq/sigil/agent/peercred"
	"github.com/sigilhq/sigil/internal/clock"
)

// Defaults. A pending SDS stream with its subscription costs about 28 KB
// of agent memory, so the default total bounds what callers can make the
// agent hold to roughly 100 MB of streams; one uid gets a quarter of it.
// Nodes where many workloads share a uid (Kubernetes pods running as
// root) may need a higher per-uid limit.
const (
	DefaultStreamsPerUID = 1024
	DefaultStreams       = 4096
	DefaultConnsPerUID   = 256
	DefaultConns         = 1024
	DefaultJWTSVIDRate   = 20 // FetchJWTSVID calls per second per uid
	DefaultJWTSVIDBurst  = 50
)

// Limit names: the agent.yaml keys under "limits", the metric label and
// what a refusal names.
const (
	LimitStreamsPerUID = "max_streams_per_uid"
	LimitStreams       = "max_streams"
	LimitConnsPerUID   = "max_connections_per_uid"
	LimitConns         = "max_connections"
	LimitJWTSVIDRate   = "jwt_svids_per_second_per_uid"
)

// logEvery spaces the log lines about refusals of one limit, so that a
// caller hammering a limit cannot flood the log.
const logEvery = 10 * time.Second

// Config sets the limits; a zero field takes its default.
type Config struct {
	// StreamsPerUID and Streams bound the gRPC calls open at once on the
	// socket: every Workload API or SDS stream, and unary calls while they
	// run.
	StreamsPerUID int
	Streams       int
	// ConnsPerUID and Conns bound the connections to the socket; a
	// connection past them is closed during its handshake.
	ConnsPerUID int
	Conns       int
	// JWTSVIDRate and JWTSVIDBurst bound FetchJWTSVID calls per uid (a
	// token bucket): each may make the agent ask the CA to mint.
	JWTSVIDRate  float64
	JWTSVIDBurst int
	Clock        clock.Clock
	Logger       *slog.Logger
	// Metrics, if set, registers the limiter's collectors.
	Metrics prometheus.Registerer
}

// Limiter counts what each uid holds on the socket. Use ServerOptions on
// the socket's gRPC server.
type Limiter struct {
	cfg Config
	m   metrics

	mu      sync.Mutex
	uids    map[uint32]*usage // uids holding a connection or a call
	streams int
	conns   int
	buckets map[uint32]*bucket
	pruneAt int
	logged  map[string]logState
}

type usage struct{ streams, conns int }

type bucket struct {
	tokens float64
	at     time.Time
}

type logState struct {
	at      time.Time
	refused int // since the last line
}

// New checks cfg, fills defaults and registers metrics. It starts nothing.
func New(cfg Config) (*Limiter, error) {
	for _, f := range []struct {
		name string
		v    *int
		def  int
	}{
		{LimitStreamsPerUID, &cfg.StreamsPerUID, DefaultStreamsPerUID},
		{LimitStreams, &cfg.Streams, DefaultStreams},
		{LimitConnsPerUID, &cfg.ConnsPerUID, DefaultConnsPerUID},
		{LimitConns, &cfg.Conns, DefaultConns},
		{"jwt_svid_burst_per_uid", &cfg.JWTSVIDBurst, DefaultJWTSVIDBurst},
	} {
		if *f.v < 0 {
			return nil, fmt.Errorf("socket limits: %s is %d, want a positive number", f.name, *f.v)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	if cfg.JWTSVIDRate < 0 {
		return nil, fmt.Errorf("socket limits: %s is %g, want a positive number", LimitJWTSVIDRate, cfg.JWTSVIDRate)
	}
	if cfg.JWTSVIDRate == 0 {
		cfg.JWTSVIDRate = DefaultJWTSVIDRate
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Limiter{cfg: cfg, uids: map[uint32]*usage{}, buckets: map[uint32]*bucket{}, pruneAt: 1024, logged: map[string]logState{}}
	l.m = newMetrics(l)
	if cfg.Metrics != nil {
		for _, c := range l.m.collectors() {
			if err := cfg.Metrics.Register(c); err != nil {
				return nil, fmt.Errorf("socket limits: register metrics: %w", err)
			}
		}
	}
	return l, nil
}

// ServerOptions are the options that make a gRPC server on the agent
// socket enforce the limits: creds (the socket's peer-credential
// transport credentials) wrapped to count connections, and interceptors
// that count calls. The interceptors run before any handler, so a refused
// call costs no attestation.
func (l *Limiter) ServerOptions(creds credentials.TransportCredentials) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.Creds(&limitedCreds{TransportCredentials: creds, l: l}),
		grpc.ChainStreamInterceptor(l.streamInterceptor),
		grpc.ChainUnaryInterceptor(l.unaryInterceptor),
	}
}

func (l *Limiter) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	release, err := l.openCall(ss.Context())
	if err != nil {
		return err
	}
	defer release()
	return handler(srv, ss)
}

func (l *Limiter) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if info.FullMethod == workloadpb.SpiffeWorkloadAPI_FetchJWTSVID_FullMethodName {
		if err := l.takeJWT(ctx); err != nil {
			return nil, err
		}
	}
	release, err := l.openCall(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	return handler(ctx, req)
}

// caller is the uid of the call's peer; ok is false when the call did not
// come through peer credentials (then only the totals apply).
func caller(ctx context.Context) (uid uint32, ok bool) {
	info, ok := peercred.FromContext(ctx)
	return info.UID, ok
}

// openCall takes a call slot for the caller, or refuses.
func (l *Limiter) openCall(ctx context.Context) (release func(), err error) {
	uid, known := caller(ctx)
	l.mu.Lock()
	defer l.mu.Unlock()
	var u *usage
	if known {
		u = l.uids[uid]
		if u != nil && u.streams >= l.cfg.StreamsPerUID {
			return nil, l.refuseLocked(LimitStreamsPerUID, uid, fmt.Sprintf("uid %d has %d calls open on the agent socket, the most one uid may", uid, u.streams))
		}
	}
	if l.streams >= l.cfg.Streams {
		return nil, l.refuseLocked(LimitStreams, uid, fmt.Sprintf("the agent socket has %d calls open, the most it serves", l.streams))
	}
	if known && u == nil {
		u = &usage{}
		l.uids[uid] = u
	}
	if u != nil {
		u.streams++
	}
	l.streams++
	l.m.streams.Set(float64(l.streams))
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.streams--
			l.m.streams.Set(float64(l.streams))
			if u != nil {
				u.streams--
				l.forgetLocked(uid, u)
			}
		})
	}, nil
}

// openConn takes a connection slot for uid, or refuses.
func (l *Limiter) openConn(uid uint32) (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	u := l.uids[uid]
	if u != nil && u.conns >= l.cfg.ConnsPerUID {
		return nil, l.refuseLocked(LimitConnsPerUID, uid, fmt.Sprintf("uid %d has %d connections to the agent socket, the most one uid may", uid, u.conns))
	}
	if l.conns >= l.cfg.Conns {
		return nil, l.refuseLocked(LimitConns, uid, fmt.Sprintf("the agent socket has %d connections, the most it accepts", l.conns))
	}
	if u == nil {
		u = &usage{}
		l.uids[uid] = u
	}
	u.conns++
	l.conns++
	l.m.conns.Set(float64(l.conns))
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.conns--
			l.m.conns.Set(float64(l.conns))
			u.conns--
			l.forgetLocked(uid, u)
		})
	}, nil
}

func (l *Limiter) forgetLocked(uid uint32, u *usage) {
	if u.streams == 0 && u.conns == 0 && l.uids[uid] == u {
		delete(l.uids, uid)
	}
}

// takeJWT spends one of the caller's FetchJWTSVID tokens, or refuses.
func (l *Limiter) takeJWT(ctx context.Context) error {
	uid, known := caller(ctx)
	if !known {
		return nil // not on the socket: openCall's totals still apply
	}
	now := l.cfg.Clock.Now()
	burst := float64(l.cfg.JWTSVIDBurst)
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[uid]
	if b == nil {
		b = &bucket{tokens: burst, at: now}
		l.buckets[uid] = b
		l.pruneLocked(now)
	}
	if dt := now.Sub(b.at).Seconds(); dt > 0 {
		b.tokens = min(burst, b.tokens+dt*l.cfg.JWTSVIDRate)
	}
	b.at = now
	if b.tokens < 1 {
		return l.refuseLocked(LimitJWTSVIDRate, uid, fmt.Sprintf("uid %d asked for JWT-SVIDs faster than %g per second (burst %d); retry later", uid, l.cfg.JWTSVIDRate, l.cfg.JWTSVIDBurst))
	}
	b.tokens--
	return nil
}

// pruneLocked drops buckets that have refilled (they hold nothing a new
// bucket would not), once the map has grown past pruneAt.
func (l *Limiter) pruneLocked(now time.Time) {
	if len(l.buckets) < l.pruneAt {
		return
	}
	full := time.Duration(float64(l.cfg.JWTSVIDBurst) / l.cfg.JWTSVIDRate * float64(time.Second))
	for uid, b := range l.buckets {
		if now.Sub(b.at) >= full {
			delete(l.buckets, uid)
		}
	}
	l.pruneAt = max(1024, 2*len(l.buckets))
}

// refuseLocked counts and (now and then) logs a refusal and returns the
// ResourceExhausted status the caller sees.
func (l *Limiter) refuseLocked(limit string, uid uint32, why string) error {
	l.m.refusals.WithLabelValues(limit).Inc()
	now := l.cfg.Clock.Now()
	st := l.logged[limit]
	st.refused++
	if st.at.IsZero() || now.Sub(st.at) >= logEvery {
		l.cfg.Logger.Warn("agent socket limit reached: refusing", "limit", limit, "uid", uid,
			"refused", st.refused, "reason", why)
		st = logState{at: now}
	}
	l.logged[limit] = st
	return status.Errorf(codes.ResourceExhausted, "%s (limit limits.%s; raise it in the agent's config)", why, limit)
}

// limitedCreds counts connections: a connection past a limit fails its
// handshake and is closed.
type limitedCreds struct {
	credentials.TransportCredentials
	l *Limiter
}

func (c *limitedCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, auth, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return nil, nil, err
	}
	info, ok := auth.(peercred.Info)
	if !ok {
		conn.Close()
		return nil, nil, errors.New("socket limits: connection without peer credentials")
	}
	release, err := c.l.openConn(info.UID)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return &countedConn{Conn: conn, release: release}, auth, nil
}

func (c *limitedCreds) Clone() credentials.TransportCredentials {
	return &limitedCreds{TransportCredentials: c.TransportCredentials.Clone(), l: c.l}
}

// countedConn gives its connection slot back when closed.
type countedConn struct {
	net.Conn
	release func()
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}
