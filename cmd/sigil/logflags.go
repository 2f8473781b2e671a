package main

import (
	"log/slog"
	"strings"

	"github.com/spf13/cobra"
)

// logSettings are what --log-level and --log-format ask for.
type logSettings struct {
	level  slog.Level
	format string // text | json
}

// addLogFlags adds --log-level and --log-format to root, for every command
// that logs (the run commands and sigil dev).
func addLogFlags(root *cobra.Command) {
	root.PersistentFlags().String("log-level", "info", "log level of the run commands: debug, info, warn or error")
	root.PersistentFlags().String("log-format", "text", "log format of the run commands: text or json (one object per line)")
}

// logOptions reads and checks --log-level and --log-format.
func logOptions(cmd *cobra.Command) (logSettings, error) {
	ls := logSettings{level: slog.LevelInfo, format: "text"}
	if f := cmd.Flag("log-level"); f != nil {
		switch strings.ToLower(f.Value.String()) {
		case "debug":
			ls.level = slog.LevelDebug
		case "info":
			ls.level = slog.LevelInfo
		case "warn", "warning":
			ls.level = slog.LevelWarn
		case "error":
			ls.level = slog.LevelError
		default:
			return ls, usageErrorf("--log-level %q: want debug, info, warn or error", f.Value.String())
		}
	}
	if f := cmd.Flag("log-format"); f != nil {
		switch v := strings.ToLower(f.Value.String()); v {
		case "text", "json":
			ls.format = v
		default:
			return ls, usageErrorf("--log-format %q: want text or json", f.Value.String())
		}
	}
	return ls, nil
}
