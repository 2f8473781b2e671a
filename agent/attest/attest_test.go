package attest_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sigilhq/sigil/agent/attest"
	"github.com/sigilhq/sigil/agent/attest/k8s"
	"github.com/sigilhq/sigil/agent/peercred"
	"github.com/sigilhq/sigil/internal/selector"
)

type fixed struct {
	sels []string
	err  error
}

func (f fixed) Attest(context.Context, peercred.Info) ([]selector.Selector, error) {
	if f.err != nil {
		return nil, f.err
	}
	return selector.ParseAll(f.sels)
}

func TestChain(t *testing.T) {
	unix := fixed{sels: []string{"unix:uid:0", "unix:gid:0"}}
	pod := fixed{sels: []string{"k8s:ns:shop", "unix:uid:0"}}
	notInPod := fixed{err: fmt.Errorf("k8s attest pid 1: %w", k8s.ErrNotInPod)}
	refused := fixed{err: fmt.Errorf("k8s attest pid 1: %w: pod x was deleted", k8s.ErrRefused)}
	info := peercred.Info{PID: int32(os.Getpid())}
	tests := []struct {
		name    string
		chain   attest.Chain
		want    []string
		wantErr error
	}{
		{name: "both apply", chain: attest.Chain{unix, pod}, want: []string{"k8s:ns:shop", "unix:gid:0", "unix:uid:0"}},
		{name: "host process", chain: attest.Chain{unix, notInPod}, want: []string{"unix:gid:0", "unix:uid:0"}},
		{name: "refused pod fails all", chain: attest.Chain{unix, refused}, wantErr: k8s.ErrRefused},
		{name: "nothing applies", chain: attest.Chain{notInPod}, wantErr: errors.New("no attestor applies")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.chain.Attest(context.Background(), info)
			if tt.wantErr != nil {
				if err == nil || !errors.Is(err, tt.wantErr) && !contains(err, tt.wantErr) {
					t.Fatalf("Attest = %v, %v; want error %v", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(selector.Strings(got), tt.want) {
				t.Fatalf("Attest = %v, %v; want %v", selector.Strings(got), err, tt.want)
			}
		})
	}
	if !errors.Is(k8s.ErrNotInPod, attest.ErrNotApplicable) {
		t.Fatal("k8s.ErrNotInPod does not match attest.ErrNotApplicable")
	}
}

func contains(err, want error) bool { return strings.Contains(err.Error(), want.Error()) }

// watching is an attestor that is also a Watcher on its own channel.
type watching struct {
	fixed
	ch      chan struct{}
	stopped *int
}

func (w watching) Watch(peercred.Info) (<-chan struct{}, func()) {
	return w.ch, func() { *w.stopped++ }
}

func TestChainWatch(t *testing.T) {
	info := peercred.Info{PID: int32(os.Getpid())}
	plain := fixed{sels: []string{"unix:uid:0"}}
	if ch, stop := (attest.Chain{plain}).Watch(info); ch != nil {
		t.Fatal("a chain without watchers gave a channel")
	} else {
		stop()
	}

	var stopped int
	a := watching{fixed: plain, ch: make(chan struct{}), stopped: &stopped}
	b := watching{fixed: plain, ch: make(chan struct{}), stopped: &stopped}
	ch, stop := (attest.Chain{plain, a}).Watch(info)
	if ch != (<-chan struct{})(a.ch) {
		t.Fatal("a chain with one watcher did not pass its channel on")
	}
	stop()
	if stopped != 1 {
		t.Fatalf("stop released %d watches, want 1", stopped)
	}

	stopped = 0
	ch, stop = (attest.Chain{a, plain, b}).Watch(info)
	select {
	case <-ch:
		t.Fatal("combined channel closed before any change")
	default:
	}
	close(b.ch)
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("combined channel not closed after one watcher's change")
	}
	stop()
	stop()
	if stopped != 2 {
		t.Fatalf("stop released %d watches, want 2 (once each)", stopped)
	}
}
