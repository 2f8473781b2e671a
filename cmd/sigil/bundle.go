package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
	typesv1 "github.com/sigilhq/sigil/api/types/v1"
	"github.com/sigilhq/sigil/internal/adminclient"
	"github.com/sigilhq/sigil/internal/bundleconv"
)

// maxBundleFile bounds a bundle file given to `bundle set`.
const maxBundleFile = 1 << 20

func newBundleCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "bundle", Short: "Show our trust bundle and manage federated ones"}
	addAdminSocketFlag(cmd)
	cmd.AddCommand(newBundleShowCmd(), newBundleListCmd(), newBundleSetCmd(), newBundleDeleteCmd())
	return cmd
}

func newBundleShowCmd() *cobra.Command {
	var output, format, td string
	cmd := &cobra.Command{
		Use:   "show",
		Short: "Print a trust bundle (ours by default) as PEM or as a SPIFFE bundle",
		Example: `  sigil bundle show > bundle.pem
  sigil bundle show -o spiffe    # SPIFFE bundle JSON, with the JWT authorities`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("format") {
				if cmd.Flags().Changed("output") && format != output {
					return usageErrorf("--format %q and --output %q disagree: give --output only", format, output)
				}
				output = format
			}
			switch output {
			case "pem", "spiffe", outTable, outYAML:
			case outJSON:
				output = "spiffe"
			default:
				return usageErrorf("--output %q: want pem, spiffe, json (the same as spiffe), yaml or table", output)
			}
			return withAdmin(cmd, func(c adminv1.AdminClient) error {
				resp, err := c.GetBundle(cmd.Context(), &adminv1.GetBundleRequest{TrustDomain: td})
				if err != nil {
					return err
				}
				var out []byte
				switch output {
				case "pem":
					out, err = bundlePEM(resp.GetBundle())
				case outTable:
					return printBundleTable(cmd.OutOrStdout(), resp.GetBundle())
				case outYAML:
					if out, err = bundleSPIFFE(resp.GetBundle()); err == nil {
						var doc any
						if err = json.Unmarshal(out, &doc); err == nil {
							return printData(cmd.OutOrStdout(), outYAML, doc)
						}
					}
				default:
					out, err = bundleSPIFFE(resp.GetBundle())
				}
				if err != nil {
					return err
				}
				_, err = cmd.OutOrStdout().Write(out)
				return err
			})
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "pem", "pem (X.509 authorities); spiffe or json (SPIFFE bundle JSON with JWT authorities); yaml (the same as YAML); table (one line per authority)")
	// --format was the flag's first name; scripts may still use it.
	cmd.Flags().StringVar(&format, "format", "pem", "old name of --output")
	cmd.Flags().Lookup("format").Hidden = true
	cmd.Flags().StringVar(&td, "trust-domain", "", "trust domain (default: our own)")
	return cmd
}

// bundlePEM prints the X.509 authorities as PEM certificates.
func bundlePEM(b *typesv1.Bundle) ([]byte, error) {
	var buf bytes.Buffer
	for _, der := range b.GetX509Authorities() {
		if err := pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: der}); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

// bundleSPIFFE prints the bundle as a SPIFFE bundle (JWKS) document.
func bundleSPIFFE(b *typesv1.Bundle) ([]byte, error) {
	sb, err := bundleconv.FromProto(b)
	if err != nil {
		return nil, err
	}
	doc, err := sb.Marshal()
	if err != nil {
		return nil, fmt.Errorf("bundle of %s: %w", sb.TrustDomain(), err)
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, doc, "", "  "); err != nil {
		return nil, err
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

// printBundleTable prints one line per authority: X.509 ones by subject
// and expiry, JWT ones by key ID and expiry.
func printBundleTable(w io.Writer, b *typesv1.Bundle) error {
	tw := newTable(w)
	fmt.Fprintf(tw, "trust domain: %s\n", b.GetTrustDomain())
	fmt.Fprintln(tw, "KIND\tID\tEXPIRES")
	for _, der := range b.GetX509Authorities() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("bundle of %s: %w", b.GetTrustDomain(), err)
		}
		fmt.Fprintf(tw, "x509\t%s\t%s\n", c.Subject, c.NotAfter.UTC().Format(time.RFC3339))
	}
	for _, k := range b.GetJwtAuthorities() {
		fmt.Fprintf(tw, "jwt\t%s\t%s\n", k.GetKeyId(), fmtTime(k.GetExpiresAt()))
	}
	return tw.Flush()
}

func newBundleListCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the trust bundles the CA holds (ours and federated ones)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			return withAdmin(cmd, func(c adminv1.AdminClient) error {
				resp := &adminv1.ListBundlesResponse{}
				err := adminclient.Pages(cmd.Context(), func(ctx context.Context, token string) (*adminv1.ListBundlesResponse, error) {
					return c.ListBundles(ctx, &adminv1.ListBundlesRequest{PageToken: token})
				}, func(p *adminv1.ListBundlesResponse) error {
					resp.Bundles = append(resp.Bundles, p.GetBundles()...)
					return nil
				})
				if err != nil {
					return err
				}
				if output != outTable {
					return printData(cmd.OutOrStdout(), output, resp)
				}
				tw := newTable(cmd.OutOrStdout())
				fmt.Fprintln(tw, "TRUST DOMAIN\tX509 AUTHORITIES\tJWT AUTHORITIES\tSEQUENCE\tREFRESH HINT")
				for _, b := range resp.GetBundles() {
					hint := "-"
					if b.GetRefreshHint() != nil {
						hint = b.GetRefreshHint().AsDuration().String()
					}
					fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\n", b.GetTrustDomain(), len(b.GetX509Authorities()), len(b.GetJwtAuthorities()), b.GetSequence(), hint)
				}
				return tw.Flush()
			})
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

func newBundleSetCmd() *cobra.Command {
	var td, file, format string
	cmd := &cobra.Command{
		Use:   "set",
		Short: "Set a federated trust domain's bundle from a PEM or SPIFFE bundle file",
		Example: `  sigil bundle set --trust-domain partner.org --file partner.pem
  sigil bundle set --trust-domain partner.org --file partner.json --format spiffe`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if td == "" {
				return usageErrorf("--trust-domain is required")
			}
			if file == "" {
				return usageErrorf("--file is required ('-': standard input)")
			}
			data, err := readBundleFile(cmd, file)
			if err != nil {
				return err
			}
			var f adminv1.BundleFormat
			switch format {
			case "pem":
				f = adminv1.BundleFormat_BUNDLE_FORMAT_PEM
			case "spiffe":
				f = adminv1.BundleFormat_BUNDLE_FORMAT_SPIFFE
			case "":
				f = adminv1.BundleFormat_BUNDLE_FORMAT_PEM
				if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '{' {
					f = adminv1.BundleFormat_BUNDLE_FORMAT_SPIFFE
				}
			default:
				return usageErrorf("--format %q: want pem or spiffe", format)
			}
			return withAdmin(cmd, func(c adminv1.AdminClient) error {
				resp, err := c.SetBundle(cmd.Context(), &adminv1.SetBundleRequest{TrustDomain: td, Format: f, Data: data})
				if err != nil {
					return err
				}
				b := resp.GetBundle()
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "set bundle of %s: %d X.509 and %d JWT authorities, sequence %d\n",
					b.GetTrustDomain(), len(b.GetX509Authorities()), len(b.GetJwtAuthorities()), b.GetSequence())
				return err
			})
		},
	}
	cmd.Flags().StringVar(&td, "trust-domain", "", "the federated trust domain, e.g. partner.org")
	cmd.Flags().StringVarP(&file, "file", "f", "", "bundle file ('-': standard input)")
	cmd.Flags().StringVar(&format, "format", "", "pem or spiffe (default: spiffe if the file is JSON, else pem)")
	return cmd
}

func readBundleFile(cmd *cobra.Command, path string) ([]byte, error) {
	var r io.Reader = cmd.InOrStdin()
	if path != "-" {
		fh, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer fh.Close()
		r = fh
	}
	data, err := io.ReadAll(io.LimitReader(r, maxBundleFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxBundleFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxBundleFile)
	}
	return data, nil
}

func newBundleDeleteCmd() *cobra.Command {
	var td string
	cmd := &cobra.Command{
		Use:   "delete",
		Short: "Forget a federated trust domain's bundle",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if td == "" {
				return usageErrorf("--trust-domain is required")
			}
			return withAdmin(cmd, func(c adminv1.AdminClient) error {
				if _, err := c.DeleteBundle(cmd.Context(), &adminv1.DeleteBundleRequest{TrustDomain: td}); err != nil {
					return err
				}
				_, err := fmt.Fprintf(cmd.OutOrStdout(), "deleted bundle of %s\n", td)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&td, "trust-domain", "", "the federated trust domain")
	return cmd
}
