package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "image:", err)
		}
		os.Exit(2)
	}
}

// run parses args, builds the image and writes what they ask for.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o Options
	var ociDir, tarPath string
	fs.StringVar(&ociDir, "oci", "", "write an OCI image layout to this directory (must not exist or be empty)")
	fs.StringVar(&tarPath, "tar", "", "write a docker-archive tarball here (docker load, ctr images import, kind load image-archive)")
	fs.StringVar(&o.Tag, "tag", DefaultTag, "image reference the outputs are tagged with")
	fs.StringVar(&o.Arch, "arch", runtime.GOARCH, "GOARCH of the binary and the image (the OS is always linux)")
	fs.StringVar(&o.CACerts, "ca-certs", DefaultCACerts, "PEM bundle installed as /etc/ssl/certs/ca-certificates.crt (empty: none)")
	fs.StringVar(&o.Package, "package", DefaultPackage, "Go package built as /usr/local/bin/sigil")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if ociDir == "" && tarPath == "" {
		return errors.New("nothing to write: give --oci DIR and/or --tar FILE")
	}
	if ociDir != "" {
		// Refuse before spending a build on it; WriteLayout checks again.
		if err := checkLayoutDir(ociDir); err != nil {
			return err
		}
	}
	img, err := Build(ctx, o)
	if err != nil {
		return err
	}
	if ociDir != "" {
		if err := WriteLayout(ociDir, img); err != nil {
			return err
		}
	}
	if tarPath != "" {
		if err := WriteTarball(tarPath, img); err != nil {
			return err
		}
	}
	_, err = fmt.Fprintf(stdout, "%s@%s linux/%s %s\n", img.Tag, img.Digest, img.Arch, img.Info)
	return err
}
