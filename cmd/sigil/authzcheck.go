package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/spf13/cobra"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// authzCheckView is one Check's answer as the command prints it.
type authzCheckView struct {
	Result      string            `json:"result"` // allow | deny
	HTTPStatus  int               `json:"http_status,omitempty"`
	DecisionID  string            `json:"decision_id,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
	Body        string            `json:"body,omitempty"`
	Source      string            `json:"source"`
	Destination string            `json:"destination"`
	Method      string            `json:"method"`
	Path        string            `json:"path"`
}

// newAuthzCheckCmd makes `authz check`: one Envoy ext_authz Check, built
// as Envoy builds it for an mTLS request (the peers' SPIFFE IDs as
// principals), sent to an authz service. For trying policies and for the
// quickstart; Envoy sends the real ones.
func newAuthzCheckCmd() *cobra.Command {
	var addr, src, dst, method, path, output string
	var headers []string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "check --source ID --destination ID [--method M] [--path P]",
		Short: "Send one ext_authz Check, as Envoy would for an mTLS request, and print the decision",
		Long: `Send one Envoy ext_authz v3 Check to an authz service (sigil dev's by
default) for a request from --source to --destination, the SPIFFE IDs Envoy
takes from the peers' certificates, and print the answer. The decision is
logged like any other: sigil audit tail shows it with its reason.
Exit status 0 when allowed, 1 when denied.`,
		Example: `  sigil authz check --source spiffe://example.org/ns/shop/sa/frontend \
      --destination spiffe://example.org/ns/shop/sa/cart --path /items/7`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if src == "" || dst == "" {
				return usageErrorf("--source and --destination are required (SPIFFE IDs, e.g. spiffe://example.org/ns/shop/sa/frontend)")
			}
			if !strings.HasPrefix(path, "/") {
				return usageErrorf("--path %q: want a path starting with /", path)
			}
			hdrs := map[string]string{}
			for _, h := range headers {
				k, v, ok := strings.Cut(h, "=")
				if !ok || k == "" {
					return usageErrorf("--header %q: want name=value", h)
				}
				hdrs[strings.ToLower(k)] = v
			}
			target := addr
			if p, ok := strings.CutPrefix(addr, "unix://"); ok {
				target = "unix:" + p
			}
			conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return usageErrorf("--authz-address %q: %v", addr, err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
				Source:      &authv3.AttributeContext_Peer{Principal: src},
				Destination: &authv3.AttributeContext_Peer{Principal: dst},
				Request: &authv3.AttributeContext_Request{
					Http: &authv3.AttributeContext_HttpRequest{Method: strings.ToUpper(method), Path: path, Headers: hdrs, Protocol: "HTTP/1.1"},
				},
			}}
			resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, req, grpc.WaitForReady(false))
			if err != nil {
				return explainAuthzErr(addr, timeout, err)
			}
			v := authzCheckView{Result: "deny", Source: src, Destination: dst, Method: strings.ToUpper(method), Path: path}
			allowed := code.Code(resp.GetStatus().GetCode()) == code.Code_OK
			if allowed {
				v.Result = "allow"
			}
			if id := resp.GetDynamicMetadata().GetFields()["decision_id"]; id != nil {
				v.DecisionID = id.GetStringValue()
			}
			if d := resp.GetDeniedResponse(); d != nil {
				v.HTTPStatus = int(d.GetStatus().GetCode())
				v.Body = d.GetBody()
				v.Headers = headerMap(d.GetHeaders())
			} else if ok := resp.GetOkResponse(); ok != nil {
				v.Headers = headerMap(ok.GetHeaders())
			}
			if !allowed && v.HTTPStatus == 0 {
				v.HTTPStatus = 403 // what Envoy answers for a plain denial
			}
			if output != outTable {
				if err := printData(cmd.OutOrStdout(), output, v); err != nil {
					return err
				}
			} else {
				tw := newTable(cmd.OutOrStdout())
				fmt.Fprintln(tw, "RESULT\tHTTP\tDECISION ID\tREQUEST")
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s %s -> %s %s\n", v.Result, orDash(httpCode(v.HTTPStatus)), orDash(v.DecisionID), v.Source, v.Method, v.Destination, v.Path)
				if err := tw.Flush(); err != nil {
					return err
				}
			}
			if !allowed {
				return errors.New("denied: `sigil audit tail` on the decision log shows the reason")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "authz-address", "127.0.0.1:9191", "the authz service: host:port or unix:///path (sigil dev's by default)")
	cmd.Flags().StringVar(&src, "source", "", "SPIFFE ID of the caller (the downstream peer's certificate)")
	cmd.Flags().StringVar(&dst, "destination", "", "SPIFFE ID of the called service (the sidecar's own certificate)")
	cmd.Flags().StringVar(&method, "method", "GET", "HTTP method")
	cmd.Flags().StringVar(&path, "path", "/", "HTTP path, with the query string if any")
	cmd.Flags().StringArrayVar(&headers, "header", nil, "request header name=value (repeatable)")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "how long to wait for the answer")
	addOutputFlag(cmd, &output)
	return cmd
}

func httpCode(c int) string {
	if c == 0 {
		return ""
	}
	return fmt.Sprint(c)
}

func headerMap(hs []*corev3.HeaderValueOption) map[string]string {
	if len(hs) == 0 {
		return nil
	}
	out := make(map[string]string, len(hs))
	for _, h := range hs {
		out[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	return out
}

// explainAuthzErr turns a failed Check into a message a person can act on.
func explainAuthzErr(addr string, timeout time.Duration, err error) error {
	st, _ := status.FromError(err)
	switch {
	case errors.Is(err, context.DeadlineExceeded) || st.Code() == codes.DeadlineExceeded:
		return withCode(exitUnavailable, fmt.Errorf("authz at %s did not answer within %s (--timeout)", addr, timeout))
	case st.Code() == codes.Unavailable:
		return withCode(exitUnavailable, fmt.Errorf("nothing is listening at %s: start `sigil dev` or `sigil authz run --config authz.yaml`, or point --authz-address (env SIGIL_AUTHZ_ADDRESS) at it", addr))
	}
	return fmt.Errorf("authz check: %s: %s", strings.ToLower(st.Code().String()), st.Message())
}
