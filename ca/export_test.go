package ca

import "context"

// RekeyStep advances the re-key by one step, as Run does every tick.
func (c *CA) RekeyStep(ctx context.Context) error { return c.rekeyStep(ctx) }

// RootStep advances a root rotation by one step, as Run does every tick.
func (c *CA) RootStep(ctx context.Context) error { return c.rootStep(ctx) }

// KeyIDForCert is the ID the CA gives a certificate's key.
var KeyIDForCert = keyIDForCert
