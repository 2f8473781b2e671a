package decisionlog_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/sigilhq/sigil/authz/decisionlog"
)

func TestHTTPSinkOPACompatible(t *testing.T) {
	got := make(chan []map[string]any, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Content-Encoding") != "gzip" || r.Method != http.MethodPost {
			http.Error(w, "want gzip POST", http.StatusBadRequest)
			return
		}
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		raw, _ := io.ReadAll(zr)
		var events []map[string]any
		if err := json.Unmarshal(raw, &events); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		got <- events
	}))
	defer srv.Close()
	l, err := decisionlog.New(decisionlog.Config{
		Sinks:      []decisionlog.Sink{decisionlog.NewHTTPSink(srv.URL+"/logs", srv.Client(), "envoy/authz/allow", map[string]string{"id": "authz-1"})},
		LogRequest: true,
		OnFailure:  decisionlog.FailAllow,
	})
	if err != nil {
		t.Fatal(err)
	}
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
		Method: "GET", Path: "/x", Headers: map[string]string{"Authorization": "Bearer hunter2"},
	}}}}
	if err := l.Log(context.Background(), decisionlog.Entry{DecisionID: "d1", Time: time.Unix(0, 0).UTC(), Result: "allow", Reason: "allowed", Revision: "r1", LatencyNS: 1500}, req); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Run(ctx); err != nil {
		t.Fatal(err)
	}
	events := <-got
	if len(events) != 1 {
		t.Fatalf("%d events", len(events))
	}
	e := events[0]
	if e["decision_id"] != "d1" || e["result"] != true || e["path"] != "envoy/authz/allow" || e["revision"] != "r1" || e["input"] == nil {
		t.Fatalf("event = %v", e)
	}
	raw, _ := json.Marshal(e)
	if bytes.Contains(raw, []byte("hunter2")) || !strings.Contains(string(raw), `"Authorization":"***"`) {
		t.Fatalf("secret header not masked in HTTP event: %s", raw)
	}
}

func FuzzVerify(f *testing.F) {
	f.Add([]byte(`{"decision_id":"x","seq":1,"prev":"","hash":"00"}`+"\n"), []byte(`{"n":1,"seq":1,"head":"","chain":[],"sig":""}`+"\n"))
	f.Add([]byte("\n\n{}\n"), []byte("{\n"))
	f.Add([]byte(decisionlog.SealForTest(`{"decision_id":"a","time":"2026-11-23T12:00:00Z","result":"allow","reason":"allowed","latency_ns":1,"seq":1,"prev":""`)+"\n"), []byte(nil))
	f.Add([]byte(decisionlog.SealForTest(`{"decision_id":"","time":"2026-11-23T12:00:00Z","kind":"rotate","result":"","reason":"rotated","latency_ns":0,"seq":5,"prev":"ab"`)), []byte(`{"n":1,"seq":4,"head":"ab"}`))
	f.Fuzz(func(t *testing.T, log, cps []byte) {
		for _, unsigned := range []bool{false, true} {
			v := decisionlog.NewVerifier(decisionlog.VerifyOptions{AllowUnsigned: unsigned, Roots: x509.NewCertPool()})
			if err := v.AddCheckpoints("cps", bytes.NewReader(cps)); err != nil {
				continue
			}
			if err := v.Check("fuzz", bytes.NewReader(log)); err != nil {
				continue
			}
			rep, err := v.Finish()
			if err == nil && !unsigned && rep.Checkpoints == 0 && rep.Unsigned {
				t.Fatalf("unsigned log accepted without AllowUnsigned: %+v", rep)
			}
		}
		for _, line := range bytes.Split(log, []byte("\n")) {
			_, _ = decisionlog.Decode(line)
		}
	})
}
