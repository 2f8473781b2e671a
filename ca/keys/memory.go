package keys

import (
	"context"
	"crypto"
	"fmt"
	"sync"
)

// Memory keeps keys in process memory only; they are gone when the process
// ends. It suits tests and `sigil dev`.
type Memory struct {
	mu   sync.RWMutex
	keys map[string]crypto.Signer
}

var (
	_ Manager = (*Memory)(nil)
	_ Deleter = (*Memory)(nil)
)

// NewMemory returns an empty in-memory key manager.
func NewMemory() *Memory {
	return &Memory{keys: make(map[string]crypto.Signer)}
}

// GenerateKey makes a new key called name, replacing any old one.
func (m *Memory) GenerateKey(_ context.Context, name string, t Type) (crypto.Signer, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	signer, err := generateSoft(t)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", name, err)
	}
	m.mu.Lock()
	m.keys[name] = signer
	m.mu.Unlock()
	return signer, nil
}

// Signer returns the key called name.
func (m *Memory) Signer(_ context.Context, name string) (crypto.Signer, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	m.mu.RLock()
	signer, ok := m.keys[name]
	m.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("key %s: %w", name, ErrNotFound)
	}
	return signer, nil
}

// DeleteKey forgets the key called name.
func (m *Memory) DeleteKey(_ context.Context, name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.keys[name]; !ok {
		return fmt.Errorf("key %s: %w", name, ErrNotFound)
	}
	delete(m.keys, name)
	return nil
}
