package cache

import (
	"crypto"
	"crypto/x509"
)

func parseCert(der []byte) (*x509.Certificate, error) { return x509.ParseCertificate(der) }

func parsePKIX(der []byte) (crypto.PublicKey, error) { return x509.ParsePKIXPublicKey(der) }
