package main

import (
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
)

func newFederationCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "federation",
		Short: "Manage SPIFFE federation relationships (trust domains whose bundles the CA fetches)",
	}
	addAdminSocketFlag(cmd)
	cmd.AddCommand(newFederationCreateCmd(), newFederationListCmd(), newFederationShowCmd(), newFederationDeleteCmd())
	return cmd
}

func newFederationCreateCmd() *cobra.Command {
	var f struct{ td, url, profile, endpointID, bundle, webRoots string }
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Federate with a trust domain: fetch its bundle from its bundle endpoint from now on",
		Example: `  sigil federation create --trust-domain spire.example --bundle-endpoint-url https://spire.example:8443 \
    --profile https_spiffe --endpoint-spiffe-id spiffe://spire.example/spire/server --bundle spire-bundle.json
  sigil federation create --trust-domain partner.org --bundle-endpoint-url https://bundle.partner.org/ --profile https_web`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.td == "" || f.url == "" {
				return usageErrorf("--trust-domain and --bundle-endpoint-url are required")
			}
			if f.profile != "https_spiffe" && f.profile != "https_web" {
				return usageErrorf("--profile %q: want https_spiffe or https_web", f.profile)
			}
			req := &adminv1.CreateFederationRequest{Federation: &adminv1.Federation{
				TrustDomain: f.td, BundleEndpointUrl: f.url, Profile: f.profile, EndpointSpiffeId: f.endpointID,
			}}
			var err error
			if f.bundle != "" {
				if req.Bundle, err = readBundleFile(cmd, f.bundle); err != nil {
					return err
				}
			}
			if f.webRoots != "" {
				if req.Federation.WebRootsPem, err = readBundleFile(cmd, f.webRoots); err != nil {
					return err
				}
			}
			return withAdmin(cmd, func(c adminv1.AdminClient) error {
				resp, err := c.CreateFederation(cmd.Context(), req)
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "federating with %s: bundle from %s (%s)\n",
					resp.GetFederation().GetTrustDomain(), resp.GetFederation().GetBundleEndpointUrl(), resp.GetFederation().GetProfile())
				return err
			})
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.td, "trust-domain", "", "the federated trust domain, e.g. spire.example")
	fs.StringVar(&f.url, "bundle-endpoint-url", "", "its SPIFFE bundle endpoint, https://...")
	fs.StringVar(&f.profile, "profile", "https_spiffe", "https_spiffe (endpoint authenticated by its SVID) or https_web (by Web PKI)")
	fs.StringVar(&f.endpointID, "endpoint-spiffe-id", "", "https_spiffe: the SPIFFE ID of the endpoint's certificate")
	fs.StringVar(&f.bundle, "bundle", "", "the peer's initial bundle (SPIFFE bundle JSON file, '-': standard input); https_spiffe needs one")
	fs.StringVar(&f.webRoots, "web-roots", "", "https_web: PEM CA certificates to trust instead of the system roots")
	return cmd
}

func newFederationListCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List federation relationships and how their refreshes go",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			return withAdmin(cmd, func(c adminv1.AdminClient) error {
				resp, err := c.ListFederations(cmd.Context(), &adminv1.ListFederationsRequest{})
				if err != nil {
					return err
				}
				if output != outTable {
					return printData(cmd.OutOrStdout(), output, resp)
				}
				tw := newTable(cmd.OutOrStdout())
				fmt.Fprintln(tw, "TRUST DOMAIN\tPROFILE\tURL\tSOURCE\tLAST SUCCESS\tFAILURES\tSEQUENCE")
				for _, f := range resp.GetFederations() {
					st := f.GetStatus()
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\n", f.GetTrustDomain(), f.GetProfile(), f.GetBundleEndpointUrl(), f.GetSource(),
						fmtStamp(st.GetLastSuccess().AsTime(), st.GetLastSuccess() != nil), st.GetConsecutiveFailures(), st.GetSequence())
				}
				return tw.Flush()
			})
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

func newFederationShowCmd() *cobra.Command {
	var output, td string
	cmd := &cobra.Command{
		Use:   "show",
		Short: "Show one federation relationship and its last refresh",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if td == "" {
				return usageErrorf("--trust-domain is required")
			}
			if err := checkOutput(output); err != nil {
				return err
			}
			return withAdmin(cmd, func(c adminv1.AdminClient) error {
				resp, err := c.GetFederation(cmd.Context(), &adminv1.GetFederationRequest{TrustDomain: td})
				if err != nil {
					return err
				}
				if output != outTable {
					return printData(cmd.OutOrStdout(), output, resp.GetFederation())
				}
				return printFederation(cmd.OutOrStdout(), resp.GetFederation())
			})
		},
	}
	cmd.Flags().StringVar(&td, "trust-domain", "", "the federated trust domain")
	addOutputFlag(cmd, &output)
	return cmd
}

func printFederation(w io.Writer, f *adminv1.Federation) error {
	st := f.GetStatus()
	webRoots := "system roots"
	if len(f.GetWebRootsPem()) > 0 {
		webRoots = "given (" + strconv.Itoa(len(f.GetWebRootsPem())) + " bytes of PEM)"
	}
	tw := newTable(w)
	for _, r := range []struct{ k, v string }{
		{"Trust domain", f.GetTrustDomain()},
		{"Bundle endpoint", f.GetBundleEndpointUrl()},
		{"Profile", f.GetProfile()},
		{"Endpoint SPIFFE ID", orDash(f.GetEndpointSpiffeId())},
		{"Web roots", map[bool]string{true: webRoots, false: "-"}[f.GetProfile() == "https_web"]},
		{"Source", f.GetSource()},
		{"Last attempt", fmtStamp(st.GetLastAttempt().AsTime(), st.GetLastAttempt() != nil)},
		{"Last success", fmtStamp(st.GetLastSuccess().AsTime(), st.GetLastSuccess() != nil)},
		{"Last error", orDash(st.GetLastError())},
		{"Consecutive failures", strconv.Itoa(int(st.GetConsecutiveFailures()))},
		{"Bundle sequence", strconv.FormatUint(st.GetSequence(), 10)},
		{"Next refresh", fmtStamp(st.GetNextRefresh().AsTime(), st.GetNextRefresh() != nil)},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", r.k, r.v)
	}
	return tw.Flush()
}

func fmtStamp(t time.Time, ok bool) string {
	if !ok {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func newFederationDeleteCmd() *cobra.Command {
	var td string
	cmd := &cobra.Command{
		Use:   "delete",
		Short: "Stop fetching a trust domain's bundle (the bundle stays until `sigil bundle delete`)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if td == "" {
				return usageErrorf("--trust-domain is required")
			}
			return withAdmin(cmd, func(c adminv1.AdminClient) error {
				if _, err := c.DeleteFederation(cmd.Context(), &adminv1.DeleteFederationRequest{TrustDomain: td}); err != nil {
					return err
				}
				_, err := fmt.Fprintf(cmd.OutOrStdout(), "no longer federating with %s\n", td)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&td, "trust-domain", "", "the federated trust domain")
	return cmd
}
