package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
	"github.com/sigilhq/sigil/internal/adminclient"
)

const adminSocketFlag = "admin-socket"

// adminPageSize is the page size the CLI asks for when it follows a paged
// list: the CA's maximum, the fewest round trips.
const adminPageSize = 1000

// defaultAdminSocket is where `sigil dev` puts its admin socket.
func defaultAdminSocket() string {
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(".sigil", "dev", "admin.sock")
	}
	return filepath.Join(home, ".sigil", "dev", "admin.sock")
}

// addAdminSocketFlag gives cmd and its subcommands --admin-socket (env
// SIGIL_ADMIN_SOCKET). It is harmless on a command whose parent has it
// already.
func addAdminSocketFlag(cmd *cobra.Command) {
	cmd.PersistentFlags().String(adminSocketFlag, defaultAdminSocket(),
		"unix socket of the CA's admin API, a path or unix:///path (env SIGIL_ADMIN_SOCKET)")
	cmd.PersistentFlags().String(adminServerFlag, "",
		"call a remote CA's admin API over mTLS at its server address host:port instead of the socket, with this user's X509-SVID "+
			"from the local agent ("+spiffeSocketEnv+" or the dev socket); its entry needs admin: true (env SIGIL_SERVER)")
}

// adminSocket is the socket the user asked for: the flag when given, else
// SIGIL_ADMIN_SOCKET, else the default.
func adminSocket(cmd *cobra.Command) string {
	f := cmd.Flag(adminSocketFlag)
	if f != nil && f.Changed {
		return f.Value.String()
	}
	if v := os.Getenv("SIGIL_ADMIN_SOCKET"); v != "" {
		return v
	}
	if f != nil {
		return f.Value.String()
	}
	return defaultAdminSocket()
}

// dialAdmin connects to the admin API — over the local socket, or with
// --server over mTLS — and returns a func to call when done.
func dialAdmin(cmd *cobra.Command) (adminv1.AdminClient, func(), error) {
	if server := flagOrEnv(cmd, adminServerFlag); server != "" {
		return dialAdminRemote(cmd, server)
	}
	client, conn, err := adminclient.Dial(cmd.Context(), adminSocket(cmd))
	if err != nil {
		return nil, nil, err
	}
	return client, func() { conn.Close() }, nil
}

// withAdmin runs fn with an admin client and turns its gRPC errors into
// plain ones ("invalid argument: entries[0].spiffe_id: ...").
func withAdmin(cmd *cobra.Command, fn func(adminv1.AdminClient) error) error {
	client, done, err := dialAdmin(cmd)
	if err != nil {
		return err
	}
	defer done()
	return adminErr(fn(client))
}

func adminErr(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.NotFound, codes.AlreadyExists, codes.FailedPrecondition:
		// The message says it already: "entry \"x\" not found".
		return errors.New(st.Message())
	case codes.Unavailable:
		// The socket answered the probe, then the CA went away or is
		// not ready; gRPC's own text names transports, not causes.
		return withCode(exitUnavailable, errors.New("the CA stopped answering on its admin socket; is it still running? check its log"))
	case codes.PermissionDenied, codes.Unauthenticated:
		return withCode(exitDenied, errors.New("the CA refused this call: "+st.Message()))
	case codes.DeadlineExceeded:
		return withCode(exitUnavailable, errors.New("the CA did not answer in time"))
	}
	// Split camel case: InvalidArgument -> invalid argument.
	var b strings.Builder
	for i, r := range st.Code().String() {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte(' ')
		}
		b.WriteRune(r)
	}
	return errors.New(strings.ToLower(b.String()) + ": " + st.Message())
}

// lowerEnums rewrites, in v (m's protojson decoded into maps), every enum
// value as a person writes it on the command line: KEY_KIND_X509 -> x509.
func lowerEnums(v any, md protoreflect.MessageDescriptor) {
	obj, ok := v.(map[string]any)
	if !ok {
		return
	}
	fields := md.Fields()
	for name, val := range obj {
		fd := fields.ByName(protoreflect.Name(name))
		if fd == nil {
			continue
		}
		if fd.IsMap() {
			fd = fd.MapValue()
			if m, ok := val.(map[string]any); ok {
				for k, e := range m {
					m[k] = lowerValue(e, fd)
				}
			}
			continue
		}
		if list, ok := val.([]any); ok && fd.IsList() {
			for i, e := range list {
				list[i] = lowerValue(e, fd)
			}
			continue
		}
		obj[name] = lowerValue(val, fd)
	}
}

func lowerValue(v any, fd protoreflect.FieldDescriptor) any {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		lowerEnums(v, fd.Message())
	case protoreflect.EnumKind:
		if s, ok := v.(string); ok {
			return enumWord(s, fd.Enum())
		}
	}
	return v
}

// enumWord strips the prefix the enum's values share (KEY_KIND_) and
// lower-cases the rest.
func enumWord(s string, ed protoreflect.EnumDescriptor) string {
	vals := ed.Values()
	prefix := ""
	if vals.Len() > 1 {
		prefix = string(vals.Get(0).Name())
		for i := 1; i < vals.Len(); i++ {
			name := string(vals.Get(i).Name())
			for !strings.HasPrefix(name, prefix) {
				prefix = prefix[:len(prefix)-1]
			}
		}
		prefix = prefix[:strings.LastIndex(prefix, "_")+1]
	}
	return strings.ToLower(strings.TrimPrefix(s, prefix))
}

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
}

func fmtTime(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
