package keys

import (
	"context"
	"crypto"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"go.step.sm/crypto/pemutil"

	"github.com/sigilhq/sigil/internal/atomicfile"
	"github.com/sigilhq/sigil/internal/pemfile"
)

// Disk keeps each key as a PEM file <dir>/<name>.key with mode 0600. Files
// are replaced atomically, so a reader sees the old key or the new one,
// never half of either.
type Disk struct {
	dir string
}

var (
	_ Manager = (*Disk)(nil)
	_ Deleter = (*Disk)(nil)
)

// NewDisk uses dir for key files, creating it with mode 0700 if it does not
// exist. A dir that group or others may write to is refused, since whoever
// can write there can swap the CA's keys.
func NewDisk(dir string) (*Disk, error) {
	if dir == "" {
		return nil, errors.New("key directory: empty path")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("key directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("key directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("key directory %s: not a directory", dir)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return nil, fmt.Errorf("key directory %s is writable by group or others: run chmod 700 %s", dir, dir)
	}
	return &Disk{dir: dir}, nil
}

// Path returns the file that holds (or would hold) the key called name.
func (d *Disk) Path(name string) (string, error) {
	if err := ValidateName(name); err != nil {
		return "", err
	}
	return filepath.Join(d.dir, name+".key"), nil
}

// GenerateKey makes a new key and writes it to <dir>/<name>.key, replacing
// any old one.
func (d *Disk) GenerateKey(_ context.Context, name string, t Type) (crypto.Signer, error) {
	path, err := d.Path(name)
	if err != nil {
		return nil, err
	}
	signer, err := generateSoft(t)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", name, err)
	}
	block, err := pemutil.Serialize(signer, pemutil.WithPKCS8(true))
	if err != nil {
		return nil, fmt.Errorf("key %s: encode: %w", name, err)
	}
	if err := atomicfile.Write(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, fmt.Errorf("key %s: %w", name, err)
	}
	return signer, nil
}

// Signer loads the key called name from its file. A file that group or
// others can read is refused.
func (d *Disk) Signer(_ context.Context, name string) (crypto.Signer, error) {
	path, err := d.Path(name)
	if err != nil {
		return nil, err
	}
	signer, err := ReadKeyFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("key %s: %w", name, ErrNotFound)
		}
		return nil, fmt.Errorf("key %s: %w", name, err)
	}
	return signer, nil
}

// DeleteKey removes the key file of name.
func (d *Disk) DeleteKey(_ context.Context, name string) error {
	path, err := d.Path(name)
	if err != nil {
		return err
	}
	if err := os.Remove(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("key %s: %w", name, ErrNotFound)
		}
		return fmt.Errorf("key %s: %w", name, err)
	}
	return nil
}

// ReadKeyFile loads an unencrypted PEM private key (PKCS#8, PKCS#1 or SEC 1)
// from path. It refuses a file that group or others can read or write, with
// an error that says how to fix it. A missing file gives an error wrapping
// fs.ErrNotExist.
func ReadKeyFile(path string) (crypto.Signer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("key file %s: not a regular file", path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("key file %s is accessible by group or others (mode %04o): run chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	const maxKeyFile = 1 << 20
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	if len(b) > maxKeyFile {
		return nil, fmt.Errorf("key file %s: larger than %d bytes", path, maxKeyFile)
	}
	signer, err := pemfile.ParseKey(b)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return signer, nil
}
