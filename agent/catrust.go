package agent

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/sigilhq/sigil/agent/svidstore"
)

// Trust of the CA's serving certificate.
//
// The agent verifies the CA by the bundle it holds (roots): the CA's
// signing keys. When the CA activates a key the agent has not received yet
// (the agent was down, or the new bundle was slow to reach it), the CA's
// serving certificate is signed by that key, the held bundle does not chain
// it, and an agent that refused it could never sync to get the key. So
// when the held bundle does not verify the CA's chain, the agent verifies
// it by its bootstrap roots (configured and learned: the upstream roots it
// already trusts the CA by at attestation). Under either, a chain through a
// CA key the agent knows to be revoked is refused (the upstream root signed
// the revoked key too), as is one with a certificate expired by the
// agent's clock.

// caTLSConfig is the TLS configuration of every connection to the CA: it
// accepts only the CA's SPIFFE ID by verifyCA and, with mtls, presents
// the agent's current SVID. As go-spiffe's tlsconfig does, it skips Go's
// hostname verification: verifyCA does the SPIFFE verification.
func (a *Agent) caTLSConfig(mtls bool) *tls.Config {
	conf := &tls.Config{
		MinVersion:            tls.VersionTLS12,
		InsecureSkipVerify:    true, //nolint:gosec // verifyCA verifies the chain and the SPIFFE ID
		VerifyPeerCertificate: a.verifyCA,
	}
	if mtls {
		conf.GetClientCertificate = tlsconfig.GetClientCertificate(svidSource(a.getX509SVID))
	}
	return conf
}

// verifyCA verifies the CA's certificate chain by the held roots, else by
// the bootstrap roots, and authorizes it (authorizeCA). The error of a
// chain that verifies by neither is the one the held roots gave.
func (a *Agent) verifyCA(raw [][]byte, _ [][]*x509.Certificate) error {
	authorize := a.authorizeCA()
	id, chains, err := x509svid.ParseAndVerify(raw, bundleSet(a.cfg.TrustDomain, a.roots()))
	if err == nil {
		return authorize(id, chains)
	}
	boot := a.withoutRevoked(a.bootstrapRoots())
	if len(boot) == 0 {
		return err
	}
	id, chains, bootErr := x509svid.ParseAndVerify(raw, bundleSet(a.cfg.TrustDomain, boot))
	if bootErr != nil {
		return err
	}
	if err := a.unexpiredChains(chains); err != nil {
		return err
	}
	if err := authorize(id, chains); err != nil {
		return err
	}
	a.fellBack(chains[0])
	return nil
}

// unexpiredChains refuses chains holding a certificate expired by the
// agent's clock (Go's verification uses the wall clock).
func (a *Agent) unexpiredChains(chains [][]*x509.Certificate) error {
	now := a.cfg.Clock.Now()
	for _, chain := range chains {
		for _, c := range chain {
			if !now.Before(c.NotAfter) {
				return fmt.Errorf("the CA's chain holds %q, expired at %s", c.Subject.CommonName, c.NotAfter.UTC().Format("2006-01-02T15:04:05Z"))
			}
		}
	}
	return nil
}

// fellBack counts a CA certificate accepted by the bootstrap roots only,
// and logs the CA key that signed it the first time that key is seen so.
func (a *Agent) fellBack(chain []*x509.Certificate) {
	a.metrics.trustFallbacks.Inc()
	if len(chain) < 2 {
		return
	}
	key := svidstore.KeyID(chain[1])
	if prev := a.fallbackKey.Swap(&key); prev != nil && *prev == key {
		return
	}
	a.cfg.Logger.Info("verified the CA by its bootstrap roots: the CA signs with a key the agent's bundle lacks yet",
		"key_id", key, "key_not_after", chain[1].NotAfter, "root", chain[len(chain)-1].Subject.CommonName)
}
