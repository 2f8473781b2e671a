package ca

import "context"

// RekeyStep advances the re-key by one step, as Run does every tick.
func (c *CA) RekeyStep(ctx context.Context) error { return c.rekeyStep(ctx) }
