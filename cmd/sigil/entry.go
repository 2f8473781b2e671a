package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
	typesv1 "github.com/sigilhq/sigil/api/types/v1"
	"github.com/sigilhq/sigil/internal/adminclient"
)

func newEntryCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "entry", Short: "Manage registration entries (who gets which SPIFFE ID)"}
	addAdminSocketFlag(cmd)
	cmd.AddCommand(newEntryCreateCmd(), newEntryListCmd(), newEntryShowCmd(), newEntryUpdateCmd(), newEntryDeleteCmd())
	return cmd
}

// entryFlags are the flags that describe one entry.
type entryFlags struct {
	spiffeID, parentID      string
	selectors, dns, federat []string
	x509TTL, jwtTTL         time.Duration
	admin, downstream       bool
}

func (f *entryFlags) add(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&f.spiffeID, "spiffe-id", "", "SPIFFE ID the workload gets, e.g. spiffe://example.org/ns/shop/sa/cart")
	fs.StringVar(&f.parentID, "parent-id", "", "SPIFFE ID of the agent (or node alias) that may hand it out")
	fs.StringArrayVar(&f.selectors, "selector", nil, "selector type:value the workload must match, e.g. unix:uid:1000 (repeatable)")
	fs.DurationVar(&f.x509TTL, "x509-ttl", 0, "X509-SVID lifetime (0: the CA's default)")
	fs.DurationVar(&f.jwtTTL, "jwt-ttl", 0, "JWT-SVID lifetime (0: the CA's default)")
	fs.StringArrayVar(&f.dns, "dns", nil, "DNS name to put in the X509-SVID (repeatable)")
	fs.StringArrayVar(&f.federat, "federates-with", nil, "trust domain whose bundle the workload also gets (repeatable)")
	fs.BoolVar(&f.admin, "admin", false, "the SVID may call the admin API")
	fs.BoolVar(&f.downstream, "downstream", false, "the SVID is a downstream CA")
}

var entryFlagNames = []string{"spiffe-id", "parent-id", "selector", "x509-ttl", "jwt-ttl", "dns", "federates-with", "admin", "downstream"}

// apply sets on e the fields whose flags were given (all of them when
// all is true).
func (f *entryFlags) apply(cmd *cobra.Command, e *typesv1.Entry, all bool) {
	set := func(name string) bool { return all || cmd.Flags().Changed(name) }
	if set("spiffe-id") {
		e.SpiffeId = f.spiffeID
	}
	if set("parent-id") {
		e.ParentId = f.parentID
	}
	if set("selector") {
		e.Selectors = f.selectors
	}
	if set("x509-ttl") {
		e.X509Ttl = durationpb.New(f.x509TTL)
	}
	if set("jwt-ttl") {
		e.JwtTtl = durationpb.New(f.jwtTTL)
	}
	if set("dns") {
		e.DnsNames = f.dns
	}
	if set("federates-with") {
		e.FederatesWith = f.federat
	}
	if set("admin") {
		e.Admin = f.admin
	}
	if set("downstream") {
		e.Downstream = f.downstream
	}
}

func newEntryCreateCmd() *cobra.Command {
	var (
		f      entryFlags
		file   string
		output string
	)
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a registration entry, or a batch of them from a file (all or none)",
		Example: `  sigil entry create --spiffe-id spiffe://example.org/ns/shop/sa/cart \
      --parent-id spiffe://example.org/sigil/agent/join_token/TOKEN --selector unix:uid:1000
  sigil entry create --file entries.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			var entries []*typesv1.Entry
			if file != "" {
				for _, n := range entryFlagNames {
					if cmd.Flags().Changed(n) {
						return fmt.Errorf("--%s cannot be combined with --file: put it in the file", n)
					}
				}
				var err error
				if entries, err = readEntryFile(cmd, file); err != nil {
					return err
				}
				// As with --parent-id: on a dev admin socket an entry
				// without parent_id belongs to the dev agent.
				if id, ok := devParentID(adminSocket(cmd)); ok {
					for _, e := range entries {
						if e.GetParentId() == "" {
							e.ParentId = id
						}
					}
				}
			} else {
				if f.spiffeID == "" {
					return errors.New("--spiffe-id is required (or --file)")
				}
				if f.parentID == "" {
					id, ok := devParentID(adminSocket(cmd))
					if !ok {
						return errors.New("--parent-id is required (it defaults to the agent of `sigil dev` only on a dev admin socket)")
					}
					f.parentID = id
					cmd.Flags().Set("parent-id", id)
				}
				if len(f.selectors) == 0 {
					return errors.New("at least one --selector is required, e.g. --selector unix:uid:1000")
				}
				e := &typesv1.Entry{}
				f.apply(cmd, e, true)
				if f.x509TTL == 0 {
					e.X509Ttl = nil
				}
				if f.jwtTTL == 0 {
					e.JwtTtl = nil
				}
				entries = []*typesv1.Entry{e}
			}
			req := &adminv1.CreateEntriesRequest{Entries: entries}
			if len(entries) > streamAbove || proto.Size(req) > streamBytes {
				return withAdmin(cmd, func(c adminv1.AdminClient) error {
					resp, err := streamEntries(cmd.Context(), c, entries)
					if err != nil {
						return err
					}
					if output != outTable {
						return printData(cmd.OutOrStdout(), output, resp)
					}
					_, err = fmt.Fprintf(cmd.OutOrStdout(), "created %d entries (revisions %d to %d)\n", resp.GetCreated(), resp.GetFirstRevision(), resp.GetLastRevision())
					return err
				})
			}
			return withAdmin(cmd, func(c adminv1.AdminClient) error {
				resp, err := c.CreateEntries(cmd.Context(), req)
				if err != nil {
					return err
				}
				if output != outTable {
					return printData(cmd.OutOrStdout(), output, resp)
				}
				return printEntryTable(cmd.OutOrStdout(), resp.GetEntries())
			})
		},
	}
	f.add(cmd)
	cmd.Flags().StringVarP(&file, "file", "f", "", "YAML or JSON list of entries to create together ('-': standard input); keys as README's \"Entry files\" lists")
	addOutputFlag(cmd, &output)
	return cmd
}

func readEntryFile(cmd *cobra.Command, path string) ([]*typesv1.Entry, error) {
	var r io.Reader = cmd.InOrStdin()
	if path != "-" {
		fh, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer fh.Close()
		r = fh
	}
	entries, err := adminclient.DecodeEntries(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return entries, nil
}

// A batch of more than streamAbove entries, or one over streamBytes
// encoded, goes through CreateEntriesStream: in messages of at most
// streamAbove entries and streamBytes each (the CA takes 1000 entries and
// 4 MiB a message), written by the CA all at once when the stream ends.
const (
	streamAbove = 1000
	streamBytes = 1 << 20
)

// streamEntries sends entries over CreateEntriesStream. When the CA ends
// the call early (a bad entry), Send fails and CloseAndRecv says why.
func streamEntries(ctx context.Context, c adminv1.AdminClient, entries []*typesv1.Entry) (*adminv1.CreateEntriesStreamResponse, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.CreateEntriesStream(ctx)
	if err != nil {
		return nil, err
	}
	msg := &adminv1.CreateEntriesStreamRequest{}
	size := 0
	flush := func() error {
		if len(msg.Entries) == 0 {
			return nil
		}
		err := stream.Send(msg)
		msg, size = &adminv1.CreateEntriesStreamRequest{}, 0
		return err
	}
	for i, e := range entries {
		n := proto.Size(e) + 8 // the field's tag and length
		if n > streamBytes {
			return nil, fmt.Errorf("entry %d (%s) encodes to %d bytes, over the limit of %d", i, e.GetSpiffeId(), n, streamBytes)
		}
		if len(msg.Entries) == streamAbove || size+n > streamBytes {
			if err := flush(); err != nil {
				break
			}
		}
		msg.Entries = append(msg.Entries, e)
		size += n
	}
	if err := flush(); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return stream.CloseAndRecv()
}

func newEntryListCmd() *cobra.Command {
	var parentID, spiffeID, output string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List registration entries",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			return withAdmin(cmd, func(c adminv1.AdminClient) error {
				resp := &adminv1.ListEntriesResponse{}
				err := adminclient.Pages(cmd.Context(), func(ctx context.Context, token string) (*adminv1.ListEntriesResponse, error) {
					return c.ListEntries(ctx, &adminv1.ListEntriesRequest{ParentId: parentID, SpiffeId: spiffeID, PageSize: adminPageSize, PageToken: token})
				}, func(p *adminv1.ListEntriesResponse) error {
					resp.Entries = append(resp.Entries, p.GetEntries()...)
					return nil
				})
				if err != nil {
					return err
				}
				if output != outTable {
					return printData(cmd.OutOrStdout(), output, resp)
				}
				return printEntryTable(cmd.OutOrStdout(), resp.GetEntries())
			})
		},
	}
	cmd.Flags().StringVar(&parentID, "parent-id", "", "only entries with this parent ID")
	cmd.Flags().StringVar(&spiffeID, "spiffe-id", "", "only entries with this SPIFFE ID")
	addOutputFlag(cmd, &output)
	return cmd
}

func newEntryShowCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show one registration entry",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			return withAdmin(cmd, func(c adminv1.AdminClient) error {
				resp, err := c.GetEntry(cmd.Context(), &adminv1.GetEntryRequest{Id: args[0]})
				if err != nil {
					return err
				}
				if output != outTable {
					return printData(cmd.OutOrStdout(), output, resp.GetEntry())
				}
				return printEntry(cmd.OutOrStdout(), resp.GetEntry())
			})
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

func newEntryUpdateCmd() *cobra.Command {
	var (
		f      entryFlags
		output string
	)
	cmd := &cobra.Command{
		Use:   "update ID",
		Short: "Change a registration entry; flags not given keep their value (--selector, --dns and --federates-with replace the whole list)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			changed := false
			for _, n := range entryFlagNames {
				changed = changed || cmd.Flags().Changed(n)
			}
			if !changed {
				return errors.New("nothing to change: give at least one of --" + strings.Join(entryFlagNames, ", --"))
			}
			return withAdmin(cmd, func(c adminv1.AdminClient) error {
				got, err := c.GetEntry(cmd.Context(), &adminv1.GetEntryRequest{Id: args[0]})
				if err != nil {
					return err
				}
				e := got.GetEntry()
				f.apply(cmd, e, false)
				// e.Revision is the one read: a concurrent change makes the
				// update fail instead of being overwritten.
				resp, err := c.UpdateEntry(cmd.Context(), &adminv1.UpdateEntryRequest{Entry: e})
				if err != nil {
					return err
				}
				if output != outTable {
					return printData(cmd.OutOrStdout(), output, resp.GetEntry())
				}
				return printEntry(cmd.OutOrStdout(), resp.GetEntry())
			})
		},
	}
	f.add(cmd)
	addOutputFlag(cmd, &output)
	return cmd
}

func newEntryDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a registration entry",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd, func(c adminv1.AdminClient) error {
				resp, err := c.DeleteEntry(cmd.Context(), &adminv1.DeleteEntryRequest{Id: args[0]})
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "deleted entry %s (%s)\n", resp.GetEntry().GetId(), resp.GetEntry().GetSpiffeId())
				return err
			})
		},
	}
}

func printEntryTable(w io.Writer, entries []*typesv1.Entry) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tSPIFFE ID\tPARENT ID\tSELECTORS\tX509 TTL\tJWT TTL\tFLAGS")
	for _, e := range entries {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.GetId(), e.GetSpiffeId(), e.GetParentId(),
			strings.Join(e.GetSelectors(), ","), fmtTTL(e.GetX509Ttl()), fmtTTL(e.GetJwtTtl()), entryFlagsText(e))
	}
	return tw.Flush()
}

func printEntry(w io.Writer, e *typesv1.Entry) error {
	tw := newTable(w)
	rows := []struct{ k, v string }{
		{"ID", e.GetId()},
		{"SPIFFE ID", e.GetSpiffeId()},
		{"Parent ID", e.GetParentId()},
		{"Selectors", strings.Join(e.GetSelectors(), ", ")},
		{"X509-SVID TTL", fmtTTL(e.GetX509Ttl())},
		{"JWT-SVID TTL", fmtTTL(e.GetJwtTtl())},
		{"DNS names", orDash(strings.Join(e.GetDnsNames(), ", "))},
		{"Federates with", orDash(strings.Join(e.GetFederatesWith(), ", "))},
		{"Admin", fmt.Sprint(e.GetAdmin())},
		{"Downstream", fmt.Sprint(e.GetDownstream())},
		{"Revision", fmt.Sprint(e.GetRevision())},
		{"Created", fmtTime(e.GetCreatedAt())},
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s:\t%s\n", r.k, r.v)
	}
	return tw.Flush()
}

func fmtTTL(d *durationpb.Duration) string {
	if d == nil || d.AsDuration() == 0 {
		return "default"
	}
	return d.AsDuration().String()
}

func entryFlagsText(e *typesv1.Entry) string {
	var fl []string
	if e.GetAdmin() {
		fl = append(fl, "admin")
	}
	if e.GetDownstream() {
		fl = append(fl, "downstream")
	}
	return orDash(strings.Join(fl, ","))
}
