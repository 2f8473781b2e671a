package workloadapi_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"

	"github.com/sigilhq/sigil/agent/workloadapi"
)

func TestPrometheusMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := workloadapi.NewPrometheusMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.ObserveCall("FetchX509SVID", codes.OK)
	m.ObserveCall("FetchX509SVID", codes.OK)
	m.ObserveCall("FetchJWTSVID", codes.PermissionDenied)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "sigil_workloadapi_calls_total" {
			t.Fatalf("unexpected family %s", mf.GetName())
		}
		for _, mt := range mf.GetMetric() {
			key := ""
			for _, l := range mt.GetLabel() {
				key += l.GetName() + "=" + l.GetValue() + ","
			}
			got[key] = mt.GetCounter().GetValue()
		}
	}
	want := map[string]float64{
		"code=OK,method=FetchX509SVID,":              2,
		"code=PermissionDenied,method=FetchJWTSVID,": 1,
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	if _, err := workloadapi.NewPrometheusMetrics(reg); err == nil {
		t.Fatal("registering twice succeeded")
	}
}
