package pemfile

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
)

// MaxFileSize bounds what ReadCerts reads: a trust bundle of a few hundred
// roots is well under it.
const MaxFileSize = 4 << 20

const (
	typeCert = "CERTIFICATE"
	// beginLine is how pem.Decode recognizes the start of a block.
	beginLine = "-----BEGIN "
)

// ReadCerts reads the certificates in the PEM file at path (see
// ParseCerts). Errors name path; a missing file gives an error wrapping
// fs.ErrNotExist.
func ReadCerts(path string) ([]*x509.Certificate, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, MaxFileSize)
	}
	certs, err := ParseCerts(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return certs, nil
}

// ParseCerts returns the certificates of data, which must hold one or more
// CERTIFICATE blocks and nothing else but text before a block.
func ParseCerts(data []byte) ([]*x509.Certificate, error) {
	blocks, err := decodeAll(data)
	if err != nil {
		return nil, err
	}
	certs := make([]*x509.Certificate, 0, len(blocks))
	for i, b := range blocks {
		if b.Type != typeCert {
			return nil, fmt.Errorf("block %d: unexpected PEM block type %s, want %s", i+1, quoteType(b.Type), typeCert)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", i+1, err)
		}
		certs = append(certs, c)
	}
	return certs, nil
}

// ParseKey returns the unencrypted private key in data: one PKCS#8
// "PRIVATE KEY", SEC 1 "EC PRIVATE KEY" or PKCS#1 "RSA PRIVATE KEY" block,
// optionally after an "EC PARAMETERS" block (as openssl ecparam -genkey
// writes). The key must be able to sign.
func ParseKey(data []byte) (crypto.Signer, error) {
	blocks, err := decodeAll(data)
	if err != nil {
		return nil, err
	}
	if len(blocks) > 1 && blocks[0].Type == "EC PARAMETERS" {
		blocks = blocks[1:]
	}
	b := blocks[0]
	if b.Type == "ENCRYPTED PRIVATE KEY" || b.Headers["Proc-Type"] != "" {
		return nil, errors.New("encrypted keys are not supported")
	}
	var parse func([]byte) (any, error)
	switch b.Type {
	case "PRIVATE KEY":
		parse = x509.ParsePKCS8PrivateKey
	case "EC PRIVATE KEY":
		parse = func(der []byte) (any, error) { return x509.ParseECPrivateKey(der) }
	case "RSA PRIVATE KEY":
		parse = func(der []byte) (any, error) { return x509.ParsePKCS1PrivateKey(der) }
	default:
		return nil, fmt.Errorf("unexpected PEM block type %s, want a private key", quoteType(b.Type))
	}
	if len(blocks) > 1 {
		return nil, fmt.Errorf("%d PEM blocks, want one private key", len(blocks))
	}
	key, err := parse(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Type, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s holds a %T, which cannot sign", b.Type, key)
	}
	return signer, nil
}

// decodeAll returns every block of data, at least one, refusing malformed
// blocks and anything but whitespace after the last block.
func decodeAll(data []byte) ([]*pem.Block, error) {
	var blocks []*pem.Block
	for rest := data; ; {
		b, after := pem.Decode(rest)
		if b == nil {
			switch {
			case beginsBlocks(rest) > 0:
				return nil, fmt.Errorf("malformed PEM block after %d good ones (truncated file?)", len(blocks))
			case len(blocks) == 0:
				return nil, errors.New("no PEM block")
			case len(bytes.TrimSpace(rest)) > 0:
				return nil, fmt.Errorf("trailing data after PEM block %d", len(blocks))
			}
			return blocks, nil
		}
		// pem.Decode skips a BEGIN line it cannot decode and returns a
		// later block: more than one BEGIN line in what it consumed means
		// a block was dropped.
		if beginsBlocks(rest[:len(rest)-len(after)]) > 1 {
			return nil, fmt.Errorf("malformed PEM block after %d good ones", len(blocks))
		}
		blocks = append(blocks, b)
		rest = after
	}
}

// beginsBlocks counts the lines of b that start a PEM block.
func beginsBlocks(b []byte) int {
	n := bytes.Count(b, []byte("\n"+beginLine))
	if bytes.HasPrefix(b, []byte(beginLine)) {
		n++
	}
	return n
}

// quoteType quotes a block type for a message, cut short: it comes from
// the file.
func quoteType(t string) string {
	const maxLen = 64
	if len(t) > maxLen {
		return fmt.Sprintf("%q...", t[:maxLen])
	}
	return fmt.Sprintf("%q", t)
}
