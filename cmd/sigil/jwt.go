package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
)

func newJWTCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "jwt", Short: "Fetch and validate JWT-SVIDs through the agent"}
	cmd.AddCommand(newJWTFetchCmd(), newJWTValidateCmd())
	return cmd
}

// jwtView is a JWT-SVID as -o json|yaml prints it.
type jwtView struct {
	Valid     bool           `json:"valid,omitempty"`
	SPIFFEID  string         `json:"spiffe_id"`
	Audience  []string       `json:"audience"`
	ExpiresAt time.Time      `json:"expires_at"`
	Hint      string         `json:"hint,omitempty"`
	Token     string         `json:"token,omitempty"`
	Claims    map[string]any `json:"claims,omitempty"`
}

func newJWTFetchCmd() *cobra.Command {
	var wf workloadFlags
	var audience []string
	var id, output string
	cmd := &cobra.Command{
		Use:   "fetch",
		Short: "Print a JWT-SVID for this process (one line per identity)",
		Long: `Fetch JWT-SVIDs over the SPIFFE Workload API. The table format is the
tokens alone, one line per identity, for scripts; json and yaml add each
token's SPIFFE ID, audience and expiry.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if len(audience) == 0 {
				return usageErrorf("--audience is required")
			}
			p := jwtsvid.Params{Audience: audience[0], ExtraAudiences: audience[1:]}
			if id != "" {
				sub, err := spiffeid.FromString(id)
				if err != nil {
					return usageErrorf("--spiffe-id %q: %w", id, err)
				}
				p.Subject = sub
			}
			c, ctx, done, err := wf.client(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			svids, err := c.FetchJWTSVIDs(ctx, p)
			if err != nil {
				return c.explain("fetch jwt-svid", err)
			}
			if output != outTable {
				views := make([]jwtView, 0, len(svids))
				for _, s := range svids {
					views = append(views, jwtView{SPIFFEID: s.ID.String(), Audience: s.Audience, ExpiresAt: s.Expiry.UTC(), Hint: s.Hint, Token: s.Marshal()})
				}
				return printData(cmd.OutOrStdout(), output, views)
			}
			for _, s := range svids {
				fmt.Fprintln(cmd.OutOrStdout(), s.Marshal())
			}
			return nil
		},
	}
	wf.add(cmd)
	addOutputFlag(cmd, &output)
	cmd.Flags().StringSliceVar(&audience, "audience", nil, "audience (repeat or comma-separate for several)")
	cmd.Flags().StringVar(&id, "spiffe-id", "", "which of this process's identities (default: each)")
	return cmd
}

func newJWTValidateCmd() *cobra.Command {
	var wf workloadFlags
	var audience, output string
	cmd := &cobra.Command{
		Use:   "validate TOKEN",
		Short: "Check a JWT-SVID's signature, expiry and audience through the agent",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if audience == "" {
				return usageErrorf("--audience is required")
			}
			c, ctx, done, err := wf.client(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			s, err := c.ValidateJWTSVID(ctx, args[0], audience)
			if err != nil {
				return c.explain("invalid jwt-svid", err)
			}
			if output != outTable {
				return printData(cmd.OutOrStdout(), output, jwtView{Valid: true, SPIFFEID: s.ID.String(), Audience: s.Audience, ExpiresAt: s.Expiry.UTC(), Claims: s.Claims})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "valid: %s, audience %v, expires %s\n", s.ID, s.Audience, s.Expiry.UTC().Format(time.RFC3339))
			return nil
		},
	}
	wf.add(cmd)
	addOutputFlag(cmd, &output)
	cmd.Flags().StringVar(&audience, "audience", "", "the audience the token must carry")
	return cmd
}
